# patch.cmake — the function patch engine, the `func` commands, their examples, tests and
# benchmark (issue 3). Included by the top-level CMakeLists.txt.
target_sources(hotpatch_objects PRIVATE
  src/engine/patch.c src/engine/stop.c src/engine/maps.c src/engine/symbols.c
  src/engine/arch/x86_64.c src/engine/arch/x86_64_decode.c
  src/commands/func.c)

# The engine decodes functions with capstone (Debian: libcapstone-dev) before patching them.
find_package(PkgConfig REQUIRED)
pkg_check_modules(PATCH_CAPSTONE REQUIRED IMPORTED_TARGET capstone)
# hotpatch_objects gets the headers; every target built from its objects links the library
# (deferred to the end of the directory so that targets of later fragments, such as the preload
# agent, are covered too). The shared library and the preload agent keep capstone to
# themselves; the static archive hands it on to whoever links it: in this build as the
# imported target, once installed as hotpatch::capstone, which hotpatchConfig.cmake defines.
target_link_libraries(hotpatch_objects PRIVATE PkgConfig::PATCH_CAPSTONE)
function(hotpatch_link_capstone)
  foreach(t hotpatch hotpatch_preload)
    if(TARGET ${t})
      target_link_libraries(${t} PRIVATE PkgConfig::PATCH_CAPSTONE)
    endif()
  endforeach()
  target_link_libraries(hotpatch_static PRIVATE $<BUILD_INTERFACE:PkgConfig::PATCH_CAPSTONE>
                        $<INSTALL_INTERFACE:hotpatch::capstone>)
endfunction()
cmake_language(DEFER CALL hotpatch_link_capstone)

# Everything below is examples, tests and the benchmark.
if(NOT HOTPATCH_BUILD_TESTS)
  return()
endif()

# ---- example patch libraries for simple_server's add_func -------------------------------------
foreach(n 1 2)
  add_library(add_func_patch${n} SHARED examples/add_func_patch${n}.c)
endforeach()

pkg_check_modules(PATCH_CMOCKA REQUIRED IMPORTED_TARGET cmocka)

# ---- unit tests ---------------------------------------------------------------------------------
# test_patch is built with -fcf-protection so its functions start with endbr64 (the engine must
# patch after it); the patch libraries it loads are the examples above and a far one below.
add_library(patch_test_far SHARED tests/unit/patch_test_far.c)
add_library(patch_test_unload SHARED tests/unit/patch_test_unload.c)
add_executable(test_patch tests/unit/test_patch.c)
target_compile_options(test_patch PRIVATE -fcf-protection=full)
target_link_libraries(test_patch PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_patch PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(test_patch PRIVATE _GNU_SOURCE
  PATCH_TEST_FAR_LIB="$<TARGET_FILE:patch_test_far>"
  PATCH_TEST_UNLOAD_LIB="$<TARGET_FILE:patch_test_unload>")
add_dependencies(test_patch patch_test_far patch_test_unload)
add_test(NAME unit_patch COMMAND test_patch)
set_tests_properties(unit_patch PROPERTIES TIMEOUT 120)

# ---- stress test (issue 3, item 7) ----------------------------------------------------------------
add_library(stress_target SHARED tests/stress/stress_lib.c)
target_compile_definitions(stress_target PRIVATE TARGET)
target_compile_options(stress_target PRIVATE -O2)
add_library(stress_repl SHARED tests/stress/stress_lib.c)
foreach(opt O0 O2)
  add_executable(stress_patch_${opt} tests/stress/stress_patch.c)
  # The flavour's -O level comes last so it wins over the build type's.
  target_compile_options(stress_patch_${opt} PRIVATE -fcf-protection=full -${opt})
  target_include_directories(stress_patch_${opt} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_compile_definitions(stress_patch_${opt} PRIVATE _GNU_SOURCE
    BUILD_FLAVOR="-${opt} -fcf-protection=full PIE"
    STRESS_TARGET_LIB="$<TARGET_FILE:stress_target>"
    STRESS_REPL_LIB="$<TARGET_FILE:stress_repl>")
  set_target_properties(stress_patch_${opt} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_link_options(stress_patch_${opt} PRIVATE -pie)
  target_link_libraries(stress_patch_${opt} PRIVATE hotpatch_static)
  add_dependencies(stress_patch_${opt} stress_target stress_repl)
  # Under TSan busy threads cannot be parked by a signal (TSan defers them), so the engine
  # refuses what needs every thread stopped: the stress test is not registered there.
  if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
    add_test(NAME stress_patch_${opt} COMMAND stress_patch_${opt} 8 10000)
    set_tests_properties(stress_patch_${opt} PROPERTIES TIMEOUT 600)
  endif()
endforeach()

# ---- benchmark (issue 3, item 8): `make bench` runs bench/run.sh ---------------------------------
add_library(bench_far SHARED bench/bench_lib.c)
target_compile_options(bench_far PRIVATE -O2)
add_executable(bench_patch bench/bench_patch.c)
target_compile_options(bench_patch PRIVATE -O2)
target_include_directories(bench_patch PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(bench_patch PRIVATE _GNU_SOURCE
  BENCH_FAR_LIB="$<TARGET_FILE:bench_far>")
target_link_libraries(bench_patch PRIVATE hotpatch_static)
add_dependencies(bench_patch bench_far)
if(NOT TARGET bench)
  add_custom_target(bench COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/bench/run.sh
    DEPENDS bench_patch USES_TERMINAL
    COMMENT "patch benchmark (bench/run.sh)")
endif()
if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
add_test(NAME bench_patch_smoke COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/bench/run.sh --smoke)
set_tests_properties(bench_patch_smoke PROPERTIES TIMEOUT 300
  ENVIRONMENT "BUILD_DIR=${PROJECT_BINARY_DIR}")
endif()

# ---- integration tests: the func commands end to end ---------------------------------------------
# Not under TSan: TSan defers the signals that stop threads, so every code write is refused
# there (cleanly); unit_patch covers what can run under TSan.
if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
add_test(NAME integration_func
  COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_func.py)
set_tests_properties(integration_func PROPERTIES
  ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR}" TIMEOUT 600)
endif()
