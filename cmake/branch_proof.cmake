# branch_proof.cmake — tests of the engine's reach (issue 11): the whole-object branch proof,
# tiny functions, the maps reader of any size, versioned symbols and full-path objects, and the
# decoder loaded on first use. Included by the top-level CMakeLists.txt after patch.cmake.

# The engine's ELF reader (symbols and the branch proof share it).
target_sources(hotpatch_objects PRIVATE src/engine/elf.c src/engine/branch_proof.c)

# ---- the maps reader on a map of several MiB (a process of its own) ---------------------------
add_executable(test_maps tests/unit/test_maps.c)
target_link_libraries(test_maps PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_maps PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(test_maps PRIVATE _GNU_SOURCE)
add_test(NAME unit_maps COMMAND test_maps)
set_tests_properties(unit_maps PROPERTIES TIMEOUT 120)

# ---- versioned symbols and full-path objects --------------------------------------------------
add_library(hp_versioned SHARED tests/unit/reach/versioned.c)
target_link_options(hp_versioned PRIVATE
  -Wl,--version-script=${CMAKE_SOURCE_DIR}/tests/unit/reach/versioned.map)
# The same library without .symtab: its versions are then only in .gnu.version.
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so
  COMMAND ${CMAKE_OBJCOPY} --strip-all $<TARGET_FILE:hp_versioned>
          ${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so
  DEPENDS hp_versioned)
add_custom_target(hp_versioned_stripped ALL DEPENDS ${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so)
add_executable(test_symbols tests/unit/test_symbols.c)
target_link_libraries(test_symbols PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_symbols PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(test_symbols PRIVATE _GNU_SOURCE
  VERSIONED_LIB="$<TARGET_FILE:hp_versioned>"
  VERSIONED_STRIPPED_LIB="${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so")
add_dependencies(test_symbols hp_versioned_stripped)
add_test(NAME unit_symbols COMMAND test_symbols)
