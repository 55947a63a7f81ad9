# commands.cmake — tools/hotpatch_commands, which prints the agent's dispatch table for the man
# page, the shell completion and (later) the clients' offline help. A build-time tool: linked
# with the static library so it runs from the build tree, never installed.
add_executable(hotpatch_commands tools/hotpatch_commands.c)
target_include_directories(hotpatch_commands PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(hotpatch_commands PRIVATE _GNU_SOURCE)
target_link_libraries(hotpatch_commands PRIVATE hotpatch_static)

# ---- tests --------------------------------------------------------------------------------------
if(NOT HOTPATCH_BUILD_TESTS)
  return()
endif()
# The C header a client can compile in for an offline help, checked row by row against the table.
set(HOTPATCH_GENERATED_DIR ${PROJECT_BINARY_DIR}/generated)
file(MAKE_DIRECTORY ${HOTPATCH_GENERATED_DIR})
add_custom_command(OUTPUT ${HOTPATCH_GENERATED_DIR}/hotpatch_commands.h
  COMMAND hotpatch_commands c ${HOTPATCH_GENERATED_DIR}/hotpatch_commands.h
  DEPENDS hotpatch_commands
  COMMENT "The command table as a C header")
find_package(PkgConfig REQUIRED)
pkg_check_modules(COMMANDS_CMOCKA REQUIRED IMPORTED_TARGET cmocka)
add_executable(test_commands_header tests/unit/test_commands_header.c
  ${HOTPATCH_GENERATED_DIR}/hotpatch_commands.h)
target_include_directories(test_commands_header PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src
  ${HOTPATCH_GENERATED_DIR})
target_compile_definitions(test_commands_header PRIVATE _GNU_SOURCE)
target_link_libraries(test_commands_header PRIVATE hotpatch_static PkgConfig::COMMANDS_CMOCKA)
add_test(NAME unit_commands_header COMMAND test_commands_header)
