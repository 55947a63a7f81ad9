# preload.cmake — prebuilt binaries (issue 4): the preload agent, the gflags/glog adapter, the
# gflags and glog command families, the prebuilt_server example and their tests.
#
#   build/lib/libhotpatch_preload.so   the agent's objects + src/preload/preload.c; C only, exports only
#                                      the public API (src/preload/preload.map)
#   build/lib/libhotpatch_gflags.so    the C++ adapter dlopened by the agent when a process has
#                                      gflags; no DT_NEEDED on gflags or glog (see
#                                      src/preload/gflags_adapter.cc for why)
#   build/bin/prebuilt_server          a gflags + glog program with no hotpatch code

# The adapter needs gflags' headers only (it binds to the program's gflags at run time); glog is
# needed by the example and the tests alone.
find_package(PkgConfig REQUIRED)
pkg_check_modules(GFLAGS REQUIRED IMPORTED_TARGET gflags)

# ---- the command families and the loader, part of every agent ----------------------------------
target_sources(hotpatch_objects PRIVATE
  src/commands/gflags.c
  src/commands/glog.c
  src/preload/gflags_loader.c)
# Where an installed agent looks for the adapter when it is not beside it (see gflags_loader.c).
target_compile_definitions(hotpatch_objects PRIVATE
  HOTPATCH_INSTALL_LIBDIR="${CMAKE_INSTALL_PREFIX}/${HOTPATCH_INSTALL_PRIVATE_LIBDIR}"
  HOTPATCH_PRIVATE_SUBDIR="hotpatch")

# ---- the preload agent ---------------------------------------------------------------------------
add_library(hotpatch_preload SHARED src/preload/preload.c $<TARGET_OBJECTS:hotpatch_objects>)
target_include_directories(hotpatch_preload PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(hotpatch_preload PRIVATE _GNU_SOURCE)
target_compile_options(hotpatch_preload PRIVATE -fvisibility=hidden)
target_link_libraries(hotpatch_preload PRIVATE Threads::Threads ${CMAKE_DL_LIBS})
target_link_options(hotpatch_preload PRIVATE
  -Wl,--version-script=${CMAKE_CURRENT_SOURCE_DIR}/src/preload/preload.map
  -Wl,--no-undefined)
set_target_properties(hotpatch_preload PROPERTIES
  C_COMPILER_LAUNCHER ${HOTPATCH_OWN_CODE_LAUNCHER}
  LINKER_LANGUAGE C
  LINK_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/preload/preload.map)

# ---- the gflags/glog adapter ---------------------------------------------------------------------
add_library(hotpatch_gflags SHARED src/preload/gflags_adapter.cc)
# Headers only: the adapter binds to the program's gflags at dlopen time.
target_include_directories(hotpatch_gflags PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${GFLAGS_INCLUDE_DIRS})
target_compile_options(hotpatch_gflags PRIVATE -fvisibility=hidden -fvisibility-inlines-hidden)
target_link_libraries(hotpatch_gflags PRIVATE ${CMAKE_DL_LIBS})
target_link_options(hotpatch_gflags PRIVATE
  -Wl,--version-script=${CMAKE_CURRENT_SOURCE_DIR}/src/preload/gflags_adapter.map)
set_target_properties(hotpatch_gflags PROPERTIES
  LINK_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/preload/gflags_adapter.map)
# Every agent may need it at run time: build it whenever the library is built.
add_dependencies(hotpatch hotpatch_gflags)
add_dependencies(hotpatch_preload hotpatch_gflags)

# The path a parent project (add_subdirectory) preloads, as find_package(hotpatch) gives it.
if(NOT HOTPATCH_TOP_LEVEL)
  set(HOTPATCH_PRELOAD_LIBRARY ${CMAKE_LIBRARY_OUTPUT_DIRECTORY}/libhotpatch_preload.so
      PARENT_SCOPE)
endif()

# Everything below is the example and the tests.
if(NOT HOTPATCH_BUILD_TESTS)
  return()
endif()
pkg_check_modules(GLOG REQUIRED IMPORTED_TARGET libglog)

# ---- example -------------------------------------------------------------------------------------
add_executable(prebuilt_server examples/prebuilt_server.cc)
target_link_libraries(prebuilt_server PRIVATE PkgConfig::GFLAGS PkgConfig::GLOG)

# ---- tests ---------------------------------------------------------------------------------------
pkg_check_modules(PRELOAD_CMOCKA REQUIRED IMPORTED_TARGET cmocka)
# A C++ program with gflags, glog and a validator that drives the gflags/glog commands through
# the agent's own dispatch (hp_handle_line), loading the adapter the way an agent does.
add_executable(test_gflags_commands tests/unit/test_gflags_commands.cc)
target_link_libraries(test_gflags_commands PRIVATE hotpatch_static PkgConfig::GFLAGS
  PkgConfig::GLOG PkgConfig::PRELOAD_CMOCKA)
target_include_directories(test_gflags_commands PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
add_dependencies(test_gflags_commands hotpatch_gflags)
add_test(NAME unit_gflags_commands COMMAND test_gflags_commands)

# A C program: the same commands must answer "no gflags" and load nothing into it.
add_executable(test_gflags_absent tests/unit/test_gflags_absent.c)
target_link_libraries(test_gflags_absent PRIVATE hotpatch_static PkgConfig::PRELOAD_CMOCKA)
target_include_directories(test_gflags_absent PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(test_gflags_absent PRIVATE _GNU_SOURCE)
add_dependencies(test_gflags_absent hotpatch_gflags)
add_test(NAME unit_gflags_absent COMMAND test_gflags_absent)

# simple_server with its own copy of the agent, linked statically and exported (-rdynamic): under
# the preload agent it must keep its own agent, and the preload must stand aside.
add_executable(simple_server_static_exported examples/simple_server.c)
target_link_libraries(simple_server_static_exported PRIVATE hotpatch_static)
set_target_properties(simple_server_static_exported PROPERTIES ENABLE_EXPORTS ON)

add_test(NAME integration_preload
  COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_preload.py)
set_tests_properties(integration_preload PROPERTIES
  ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR}" TIMEOUT 600)
