# flags.cmake — warning, sanitizer and fuzzing flags for this project's own targets.
#
# Why not add_compile_options(): directory options reach every target of the directory, and
# a parent project that adds hotpatch with add_subdirectory() would either get our -Werror on
# its own code or (depending on where it adds us) not; flags set per target reach only the
# targets created here. Doing it per target by hand would make every new target in a fragment
# a chance to forget them, so the walk below runs once, at the end of this project's top
# directory (cmake_language(DEFER)), over every target created in this project's directories.
set(HOTPATCH_COMPILE_OPTIONS -Wall -Wextra -fno-strict-aliasing)
set(HOTPATCH_LINK_OPTIONS)
if(HOTPATCH_WERROR)
  list(APPEND HOTPATCH_COMPILE_OPTIONS -Werror)
endif()
if(HOTPATCH_SANITIZE STREQUAL "address")
  list(APPEND HOTPATCH_COMPILE_OPTIONS -fsanitize=address,undefined -fno-omit-frame-pointer
       -fno-sanitize-recover=undefined)
  list(APPEND HOTPATCH_LINK_OPTIONS -fsanitize=address,undefined)
elseif(HOTPATCH_SANITIZE STREQUAL "thread")
  list(APPEND HOTPATCH_COMPILE_OPTIONS -fsanitize=thread -fno-omit-frame-pointer)
  list(APPEND HOTPATCH_LINK_OPTIONS -fsanitize=thread)
elseif(HOTPATCH_SANITIZE)
  message(FATAL_ERROR "HOTPATCH_SANITIZE must be '', 'address' or 'thread', not '${HOTPATCH_SANITIZE}'")
endif()
if(HOTPATCH_FUZZ)
  list(APPEND HOTPATCH_COMPILE_OPTIONS -fsanitize=fuzzer-no-link)
endif()

# Every buildsystem target of `dir` and the directories below it.
function(hotpatch_collect_targets dir out)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub ${subdirs})
    hotpatch_collect_targets(${sub} more)
    list(APPEND targets ${more})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

function(hotpatch_apply_flags)
  hotpatch_collect_targets(${PROJECT_SOURCE_DIR} targets)
  foreach(t ${targets})
    get_target_property(type ${t} TYPE)
    if(type MATCHES "^(EXECUTABLE|SHARED_LIBRARY|STATIC_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$")
      target_compile_options(${t} PRIVATE ${HOTPATCH_COMPILE_OPTIONS})
      if(NOT type MATCHES "^(STATIC|OBJECT)_LIBRARY$")
        target_link_options(${t} PRIVATE ${HOTPATCH_LINK_OPTIONS})
      endif()
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL hotpatch_apply_flags)
