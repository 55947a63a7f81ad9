# patch.cmake — the function patch engine, the `func` commands, their examples, tests and
# benchmark (issue 3). Included by the top-level CMakeLists.txt.
target_sources(hotpatch_objects PRIVATE
  src/patch.c src/patch_stop.c src/patch_x86_64.c src/symbols.c src/cmd_func.c)

# ---- example patch libraries for simple_server's add_func -------------------------------------
foreach(n 1 2)
  add_library(add_func_patch${n} SHARED examples/add_func_patch${n}.c)
endforeach()

enable_testing()
find_package(PkgConfig REQUIRED)
pkg_check_modules(PATCH_CMOCKA REQUIRED IMPORTED_TARGET cmocka)

# ---- unit tests ---------------------------------------------------------------------------------
# test_patch is built with -fcf-protection so its functions start with endbr64 (the engine must
# patch after it); the patch libraries it loads are the examples above and a far one below.
add_library(patch_test_far SHARED tests/unit/patch_test_far.c)
add_executable(test_patch tests/unit/test_patch.c)
target_compile_options(test_patch PRIVATE -fcf-protection=full)
target_link_libraries(test_patch PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_patch PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(test_patch PRIVATE _GNU_SOURCE
  PATCH_TEST_FAR_LIB="$<TARGET_FILE:patch_test_far>")
add_dependencies(test_patch patch_test_far)
add_test(NAME unit_patch COMMAND test_patch)
set_tests_properties(unit_patch PROPERTIES TIMEOUT 120)
