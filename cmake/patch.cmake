# patch.cmake — the function patch engine, the `func` commands, their examples, tests and
# benchmark (issue 3). Included by the top-level CMakeLists.txt.
target_sources(hotpatch_objects PRIVATE
  src/engine/patch.c src/engine/stop.c src/engine/ptrace_stop.c src/engine/signal_stop.c
  src/engine/maps.c src/engine/symbols.c src/engine/self.c src/engine/refscan.c
  src/engine/arch/x86_64_regs.c
  src/engine/arch/x86_64_restart.c
  src/engine/arch/x86_64.c src/engine/arch/x86_64_decode.c
  src/commands/func.c)

# The engine decodes functions with capstone (Debian: libcapstone-dev) before patching them.
# Headers only: the decoder is dlopened on first use (src/engine/arch/x86_64_decode.c), so a
# process that never patches never maps it and libhotpatch.a needs no -lcapstone.
find_package(PkgConfig REQUIRED)
pkg_check_modules(PATCH_CAPSTONE REQUIRED capstone)
target_include_directories(hotpatch_objects PRIVATE ${PATCH_CAPSTONE_INCLUDE_DIRS})

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
  PATCH_TEST_UNLOAD_LIB="$<TARGET_FILE:patch_test_unload>"
  SHAPE_PLUGIN_A="$<TARGET_FILE:shape_plugin_a>" SHAPE_PLUGIN_B="$<TARGET_FILE:shape_plugin_b>")
add_dependencies(test_patch patch_test_far patch_test_unload shape_plugin_a shape_plugin_b)
add_test(NAME unit_patch COMMAND test_patch)
set_tests_properties(unit_patch PROPERTIES TIMEOUT 120)

# ---- fault injection: the restore path of a failed code write, on real code ------------------------
# A test build of the static library whose code-write path (arch/x86_64.c) is compiled with
# HOTPATCH_FAULT_INJECTION: the test can make a write fail after N bytes, fail /proc/self/mem so
# the mprotect fallback is taken, and fail mprotect or its restore. The installed libraries are
# built without it, so no production process carries the hook.
add_library(hotpatch_fault_arch OBJECT src/engine/arch/x86_64.c)
target_include_directories(hotpatch_fault_arch PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/include
  ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(hotpatch_fault_arch PRIVATE _GNU_SOURCE HOTPATCH_FAULT_INJECTION)
target_compile_options(hotpatch_fault_arch PRIVATE -fvisibility=hidden -fno-jump-tables)
set_target_properties(hotpatch_fault_arch PROPERTIES
  C_COMPILER_LAUNCHER ${HOTPATCH_OWN_CODE_LAUNCHER} POSITION_INDEPENDENT_CODE ON)
add_library(hotpatch_fault_static STATIC
  "$<FILTER:$<TARGET_OBJECTS:hotpatch_objects>,EXCLUDE,/x86_64\\.c\\.o$>"
  $<TARGET_OBJECTS:hotpatch_fault_arch>)
target_link_libraries(hotpatch_fault_static PUBLIC Threads::Threads ${CMAKE_DL_LIBS})
add_executable(test_fault tests/unit/test_fault.c)
target_compile_options(test_fault PRIVATE -fcf-protection=full)
target_include_directories(test_fault PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src
  ${CMAKE_CURRENT_SOURCE_DIR}/include)
target_compile_definitions(test_fault PRIVATE _GNU_SOURCE HOTPATCH_FAULT_INJECTION)
target_link_libraries(test_fault PRIVATE hotpatch_fault_static PkgConfig::PATCH_CMOCKA)
add_test(NAME unit_fault COMMAND test_fault)
set_tests_properties(unit_fault PROPERTIES TIMEOUT 120)

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

# ---- 16 threads calling while 10,000 flips run over one session connection --------------------------
# A real program linked with libhotpatch (tests/stress/session_host.c) and a client in session
# mode (tests/integration/test_session_flips.py). Not under TSan (signal stop, busy threads
# refused); under ASan 2,000 flips. 16 busy threads on 2 cores make each flip wait for every
# thread to be scheduled into its stop: about 6 minutes on a loaded 2-core machine.
add_executable(session_host tests/stress/session_host.c)
target_link_libraries(session_host PRIVATE hotpatch_static)
target_compile_options(session_host PRIVATE -O2)
if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
  if(HOTPATCH_SANITIZE STREQUAL "address")
    set(HOTPATCH_SESSION_FLIPS 2000)
  else()
    set(HOTPATCH_SESSION_FLIPS 10000)
  endif()
  add_test(NAME integration_session_flips
    COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_session_flips.py)
  set_tests_properties(integration_session_flips PROPERTIES TIMEOUT 1800
    ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR};HOTPATCH_SESSION_FLIPS=${HOTPATCH_SESSION_FLIPS}")
endif()

# ---- the thread stop's probes (issue 11): tests/stress/stop_probe.c ------------------------------
add_executable(stop_probe tests/stress/stop_probe.c)
target_include_directories(stop_probe PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(stop_probe PRIVATE _GNU_SOURCE)
target_compile_options(stop_probe PRIVATE -O2)
target_link_libraries(stop_probe PRIVATE hotpatch_static)
# The ptrace probes skip (77) where the ptrace stop is not available (TSan builds use the
# signal stop, which TSan's signal deferral makes refuse busy threads).
foreach(probe sleepers signalfd signalstream sharedsignal rtqueue blocker altstack)
  add_test(NAME stop_${probe} COMMAND stop_probe ${probe} 300)
  set_tests_properties(stop_${probe} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
  if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
    add_test(NAME stop_${probe}_signal COMMAND stop_probe --signal ${probe} 100)
    set_tests_properties(stop_${probe}_signal PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
  endif()
endforeach()
# A stop that must give up (a thread in vfork) lets the threads it held go itself.
add_test(NAME stop_unstoppable COMMAND stop_probe unstoppable)
set_tests_properties(stop_unstoppable PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77)
# Thread scaling: 4,000 and 10,000 threads (64 KiB stacks); under ASan 1,000 (the sanitizers' threads are
# heavier, and TSan caps live threads: not registered there).
if(HOTPATCH_SANITIZE STREQUAL "")
  add_test(NAME stop_threads_4000 COMMAND stop_probe threads 20 4000)
  set_tests_properties(stop_threads_4000 PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE)
  # 10,000 threads: 10 upgrade + rollback pairs (about 20 s on a loaded 2-core machine).
  add_test(NAME stop_threads_10000 COMMAND stop_probe threads 10 10000)
  set_tests_properties(stop_threads_10000 PROPERTIES TIMEOUT 1200 RUN_SERIAL TRUE
    SKIP_RETURN_CODE 77)
elseif(HOTPATCH_SANITIZE STREQUAL "address")
  add_test(NAME stop_threads_1000 COMMAND stop_probe threads 20 1000)
  set_tests_properties(stop_threads_1000 PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE)
endif()

# ---- program shapes: coroutines suspended in the flipped function; plugins reloaded under it -------
add_library(shape_plugin_a SHARED tests/stress/shape_plugin.c)
add_library(shape_plugin_b SHARED tests/stress/shape_plugin.c)
target_compile_definitions(shape_plugin_b PRIVATE SHAPE_VARIANT_B)
add_executable(shape_probe tests/stress/shape_probe.c)
target_include_directories(shape_probe PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(shape_probe PRIVATE _GNU_SOURCE
  SHAPE_PLUGIN_A="$<TARGET_FILE:shape_plugin_a>" SHAPE_PLUGIN_B="$<TARGET_FILE:shape_plugin_b>")
target_compile_options(shape_probe PRIVATE -O2)
target_link_libraries(shape_probe PRIVATE hotpatch_static)
add_dependencies(shape_probe shape_plugin_a shape_plugin_b)
# The plugins shape not under TSan (busy threads refuse the signal stop there); coroutines only
# without sanitizers (neither follows makecontext stacks reliably).
if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
  add_test(NAME stress_plugins COMMAND shape_probe plugins 2000)
  set_tests_properties(stress_plugins PROPERTIES TIMEOUT 600)
endif()
if(HOTPATCH_SANITIZE STREQUAL "")
  add_test(NAME stress_coroutines COMMAND shape_probe coroutines 2000)
  set_tests_properties(stress_coroutines PROPERTIES TIMEOUT 600)
endif()

# ---- the stopped window (issue 11): code in section hotpatch_stopped calls only that section --------
# Switch statements there must not become jump tables (indirect jumps the check cannot follow).
set_source_files_properties(src/engine/stop.c src/engine/ptrace_stop.c src/engine/signal_stop.c
  src/engine/maps.c src/engine/patch.c src/engine/arch/x86_64.c src/engine/arch/x86_64_regs.c
  src/engine/arch/x86_64_restart.c
  TARGET_DIRECTORY hotpatch_objects PROPERTIES COMPILE_OPTIONS "-fno-jump-tables")
find_program(HOTPATCH_OBJDUMP objdump)
if(HOTPATCH_OBJDUMP)
  add_test(NAME stopped_window_check
    COMMAND ${HOTPATCH_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/tests/stopped_window_check.py
            $<TARGET_FILE:hotpatch> $<TARGET_FILE:hotpatch_static>)
endif()
