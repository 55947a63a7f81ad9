# branch_proof.cmake — tests of the engine's reach (issue 11): the whole-object branch proof,
# tiny functions, the maps reader of any size, versioned symbols and full-path objects, and the
# decoder loaded on first use. Included by the top-level CMakeLists.txt after patch.cmake.

# ---- the maps reader on a map of several MiB (a process of its own) ---------------------------
add_executable(test_maps tests/unit/test_maps.c)
target_link_libraries(test_maps PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_maps PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(test_maps PRIVATE _GNU_SOURCE)
add_test(NAME unit_maps COMMAND test_maps)
set_tests_properties(unit_maps PROPERTIES TIMEOUT 120)
