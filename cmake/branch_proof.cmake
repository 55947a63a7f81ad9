# branch_proof.cmake — tests of the engine's reach (issue 11): the whole-object branch proof,
# tiny functions, the maps reader of any size, versioned symbols and full-path objects, and the
# decoder loaded on first use. Included by the top-level CMakeLists.txt after patch.cmake.

# The engine's ELF reader (symbols and the branch proof share it).
target_sources(hotpatch_objects PRIVATE src/engine/elf.c src/engine/branch_proof.c)

# The rest is tests: only for the top-level project (or HOTPATCH_BUILD_TESTS).
if(NOT HOTPATCH_BUILD_TESTS)
  return()
endif()

# ---- the maps reader on a map of several MiB (a process of its own) ---------------------------
add_executable(test_maps tests/unit/test_maps.c)
target_link_libraries(test_maps PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_maps PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(test_maps PRIVATE _GNU_SOURCE)
add_test(NAME unit_maps COMMAND test_maps)
set_tests_properties(unit_maps PROPERTIES TIMEOUT 120)

# ---- versioned symbols and full-path objects --------------------------------------------------
add_library(hp_versioned SHARED tests/unit/reach/versioned.c)
target_link_options(hp_versioned PRIVATE
  -Wl,--version-script=${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/versioned.map)
# The same library without .symtab: its versions are then only in .gnu.version.
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so
  COMMAND ${CMAKE_OBJCOPY} --strip-all $<TARGET_FILE:hp_versioned>
          ${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so
  DEPENDS hp_versioned)
add_custom_target(hp_versioned_stripped ALL DEPENDS ${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so)
add_executable(test_symbols tests/unit/test_symbols.c)
target_link_libraries(test_symbols PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_symbols PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(test_symbols PRIVATE _GNU_SOURCE
  VERSIONED_LIB="$<TARGET_FILE:hp_versioned>"
  VERSIONED_STRIPPED_LIB="${CMAKE_BINARY_DIR}/lib/libhp_versioned_stripped.so")
add_dependencies(test_symbols hp_versioned_stripped)
add_test(NAME unit_symbols COMMAND test_symbols)

# ---- the whole-object branch proof and tiny functions, on gcc's own output ---------------------
# The shapes are gcc's (hot/cold splitting, CET padding), so they are built with gcc whatever
# compiler builds the project; check_shapes.sh proves with objdump that they have the shape.
find_program(HOTPATCH_GCC NAMES gcc REQUIRED)
set(HOTPATCH_SHAPES_DIR ${CMAKE_BINARY_DIR}/lib/reach)
set(HOTPATCH_SHAPE_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/hotcold.c ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/hotcold_helpers.c
  ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/asm_shapes.c ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/tiny.c
  ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/build_shapes.sh)
add_custom_command(OUTPUT ${HOTPATCH_SHAPES_DIR}/libhp_hotcold_O2.so
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/build_shapes.sh ${HOTPATCH_GCC} ${CMAKE_OBJCOPY}
          ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach ${HOTPATCH_SHAPES_DIR}
  DEPENDS ${HOTPATCH_SHAPE_SOURCES}
  COMMENT "gcc-built branch-proof test objects (tests/unit/reach)")
add_custom_target(hp_shapes ALL DEPENDS ${HOTPATCH_SHAPES_DIR}/libhp_hotcold_O2.so)
add_test(NAME reach_shapes
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/reach/check_shapes.sh ${HOTPATCH_SHAPES_DIR})
set_tests_properties(reach_shapes PROPERTIES FIXTURES_SETUP reach_shapes)

add_executable(test_branch_proof tests/unit/test_branch_proof.c)
target_link_libraries(test_branch_proof PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_branch_proof PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(test_branch_proof PRIVATE _GNU_SOURCE
  SHAPES_DIR="${HOTPATCH_SHAPES_DIR}")
add_dependencies(test_branch_proof hp_shapes)
add_test(NAME unit_branch_proof COMMAND test_branch_proof)
set_tests_properties(unit_branch_proof PROPERTIES TIMEOUT 120 FIXTURES_REQUIRED reach_shapes)

# ---- the decoder is loaded on first use ---------------------------------------------------------
# Links libhotpatch.a and no capstone: the test also proves the archive needs no -lcapstone.
add_executable(test_lazy_decoder tests/unit/test_lazy_decoder.c)
target_link_libraries(test_lazy_decoder PRIVATE hotpatch_static PkgConfig::PATCH_CMOCKA)
target_include_directories(test_lazy_decoder PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(test_lazy_decoder PRIVATE _GNU_SOURCE)
add_test(NAME unit_lazy_decoder COMMAND test_lazy_decoder)

# The preload agent in coreutils' sleep: no capstone mapped until a patch, then mapped.
if(NOT HOTPATCH_SANITIZE STREQUAL "thread")
add_test(NAME integration_idle
  COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_idle.py)
set_tests_properties(integration_idle PROPERTIES
  ENVIRONMENT "HOTPATCH_BUILD_DIR=${CMAKE_BINARY_DIR};HOTPATCH_SANITIZE=${HOTPATCH_SANITIZE}"
  TIMEOUT 120)
endif()
