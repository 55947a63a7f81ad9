# commands.cmake — tools/hotpatch_commands, which prints the agent's dispatch table for the man
# page, the shell completion and (later) the clients' offline help. A build-time tool: linked
# with the static library so it runs from the build tree, never installed.
add_executable(hotpatch_commands tools/hotpatch_commands.c)
target_include_directories(hotpatch_commands PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_compile_definitions(hotpatch_commands PRIVATE _GNU_SOURCE)
target_link_libraries(hotpatch_commands PRIVATE hotpatch_static)
