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
