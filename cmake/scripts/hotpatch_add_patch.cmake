# hotpatch_add_patch.cmake — hotpatch_add_patch(), for projects that build patch files
# (include/hotpatch_patch.h). Included by hotpatchConfig.cmake (find_package(hotpatch)) and by
# this project's own build (so add_subdirectory() users have it too).
#
#   hotpatch_add_patch(NAME SOURCES file.c... FOR <target-or-path> [OBJECT name])
#
# builds NAME.so, a MODULE library compiled with -fPIC and the directory of hotpatch_patch.h on
# its include path, and adds to it one generated source with
#     HOTPATCH_TARGET_BUILD_ID("<object>", "<the target's GNU build-id>");
# The build-id is read when the patch is built, from the file the patch is for: a CMake target
# of this project ($<TARGET_FILE:...>; the patch then depends on it, so a relinked program gets
# a patch for its new build) or the path of a file (absolute, or relative to the current source
# directory). OBJECT is how the agent finds that file in the process: by default its file name
# (the executable's name as in /proc/PID/exe, or a library's); OBJECT "" means the main program
# whatever its name. The build-id is read with readelf -n (binutils); a file without one is an
# error at build time. Everything else about the patch (sources, options, libraries) is an
# ordinary target: target_compile_options(NAME ...) and friends work on it.

# Where hotpatch_patch.h and the build-id reader are: set by whoever includes this file (the
# package's config or this project's build) before it is included, or found beside it.
if(NOT HOTPATCH_PATCH_INCLUDE_DIR)
  set(HOTPATCH_PATCH_INCLUDE_DIR "${CMAKE_CURRENT_LIST_DIR}/../../include" CACHE INTERNAL
      "the directory of hotpatch_patch.h")
endif()
set(HOTPATCH_BUILD_ID_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/hotpatch_build_id.cmake" CACHE INTERNAL
    "the script hotpatch_add_patch runs to read a build-id")

function(hotpatch_add_patch name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "FOR;OBJECT" "SOURCES")
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "hotpatch_add_patch(${name}): no SOURCES; usage: hotpatch_add_patch("
                        "NAME SOURCES file.c... FOR <target-or-path> [OBJECT name])")
  endif()
  if(NOT arg_FOR)
    message(FATAL_ERROR "hotpatch_add_patch(${name}): no FOR <target-or-path>: the program or "
                        "library the patch is for")
  endif()
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "hotpatch_add_patch(${name}): unknown arguments ${arg_UNPARSED_ARGUMENTS}")
  endif()
  find_program(HOTPATCH_READELF NAMES readelf ${CMAKE_READELF})
  if(NOT HOTPATCH_READELF)
    message(FATAL_ERROR "hotpatch_add_patch(${name}): readelf (binutils) is needed to read "
                        "the build-id of ${arg_FOR}")
  endif()
  if(TARGET "${arg_FOR}")
    set(file "$<TARGET_FILE:${arg_FOR}>")
    set(object "$<TARGET_FILE_NAME:${arg_FOR}>")
    set(depends "${arg_FOR}")
  else()
    get_filename_component(file "${arg_FOR}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    get_filename_component(object "${file}" NAME)
    set(depends "${file}")
  endif()
  # OBJECT "" is a value (the main program), which cmake_parse_arguments does not report: the
  # arguments themselves say whether OBJECT was given.
  math(EXPR last "${ARGC} - 1")
  foreach(i RANGE 1 ${last})
    if("${ARGV${i}}" STREQUAL "OBJECT" AND i LESS last)
      math(EXPR next "${i} + 1")
      set(object "${ARGV${next}}")
    endif()
  endforeach()
  set(generated "${CMAKE_CURRENT_BINARY_DIR}/${name}_build_id.c")
  add_custom_command(OUTPUT "${generated}"
    COMMAND "${CMAKE_COMMAND}" "-DFILE=${file}" "-DOBJECT=${object}" "-DOUTPUT=${generated}"
            "-DREADELF=${HOTPATCH_READELF}" -P "${HOTPATCH_BUILD_ID_SCRIPT}"
    DEPENDS ${depends} "${HOTPATCH_BUILD_ID_SCRIPT}"
    COMMENT "hotpatch: the build-id of ${arg_FOR} for patch ${name}"
    VERBATIM)
  add_library(${name} MODULE ${arg_SOURCES} "${generated}")
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON PREFIX "")
  target_include_directories(${name} PRIVATE "${HOTPATCH_PATCH_INCLUDE_DIR}")
endfunction()
