# patch_files.cmake — patch files (include/hotpatch_patch.h): the CMake helper
# hotpatch_add_patch() for this build and for add_subdirectory() users, and what the package
# installs so that find_package(hotpatch) users have it too (cmake/hotpatchConfig.cmake.in).
set(HOTPATCH_PATCH_INCLUDE_DIR "${CMAKE_CURRENT_SOURCE_DIR}/include" CACHE INTERNAL
    "the directory of hotpatch_patch.h")
include(${CMAKE_CURRENT_SOURCE_DIR}/cmake/scripts/hotpatch_add_patch.cmake)

if(HOTPATCH_INSTALL)
  install(FILES include/hotpatch_patch.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(FILES cmake/scripts/hotpatch_add_patch.cmake cmake/scripts/hotpatch_build_id.cmake
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hotpatch)
endif()

# The demo's patch for simple_server (scripts/demo.sh): build/lib/simple_server_fix.so.
if(HOTPATCH_BUILD_TESTS)
  hotpatch_add_patch(simple_server_fix SOURCES examples/simple_server_fix.c FOR simple_server)
endif()

# ---- stress: a three-function patch applied and reverted 2,000 times while 8 threads call it ----
# End to end: the program's own agent, one session, `patch apply` / `patch revert`. Not under
# TSan, whose deferred signals make every code write refused (as for stress_patch).
if(HOTPATCH_BUILD_TESTS)
  add_executable(stress_patch_files tests/stress/stress_patch_files.c)
  target_compile_options(stress_patch_files PRIVATE -O2 -fcf-protection=full)
  target_link_libraries(stress_patch_files PRIVATE hotpatch_static)
  hotpatch_add_patch(stress_patch_files_fix SOURCES tests/stress/stress_patch_files_fix.c
    FOR stress_patch_files)
  # 2,000 cycles take about 4 minutes here with 8 busy threads on 2 cores; under ASan each cycle
  # is 4 times dearer, so that build runs 500 (for memory errors; the plain build proves the
  # property at 2,000).
  set(cycles 2000)
  if(HOTPATCH_SANITIZE)
    set(cycles 500)
  endif()
  if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
    add_test(NAME stress_patch_files
      COMMAND stress_patch_files $<TARGET_FILE:stress_patch_files_fix> 8 ${cycles})
    set_tests_properties(stress_patch_files PROPERTIES TIMEOUT 1800
      ENVIRONMENT "HOTPATCH_LOG=none;HOTPATCH_AUDIT=off")
  endif()
endif()
