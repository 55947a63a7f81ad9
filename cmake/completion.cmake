# completion.cmake — the bash completion (completions/hotpatch.bash.in), with the commands and
# their arguments from the agent's dispatch table (tools/hotpatch_commands bash), into
# build/completion/hotpatch; installed where bash-completion looks for it.
set(HOTPATCH_COMPLETION ${PROJECT_BINARY_DIR}/completion/hotpatch)
add_custom_command(OUTPUT ${HOTPATCH_COMPLETION}
  COMMAND hotpatch_commands bash ${PROJECT_BINARY_DIR}/completion/commands.bash
  COMMAND ${CMAKE_COMMAND} -DTEMPLATE=${CMAKE_CURRENT_SOURCE_DIR}/completions/hotpatch.bash.in
          -DPLACEHOLDER=HOTPATCH_COMMAND_ARRAYS -DCONTENT=${PROJECT_BINARY_DIR}/completion/commands.bash
          -DOUTPUT=${HOTPATCH_COMPLETION}
          -P ${CMAKE_CURRENT_SOURCE_DIR}/cmake/scripts/fill_template.cmake
  DEPENDS hotpatch_commands ${CMAKE_CURRENT_SOURCE_DIR}/completions/hotpatch.bash.in
          ${CMAKE_CURRENT_SOURCE_DIR}/cmake/scripts/fill_template.cmake
  COMMENT "Bash completion, with the commands of the dispatch table" VERBATIM)
file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/completion)
add_custom_target(hotpatch_completion ALL DEPENDS ${HOTPATCH_COMPLETION})
if(HOTPATCH_INSTALL)
  install(FILES ${HOTPATCH_COMPLETION}
    DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
endif()

if(HOTPATCH_BUILD_TESTS AND NOT HOTPATCH_SANITIZE STREQUAL "thread")
  add_test(NAME completion
    COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_completion.py)
  set_tests_properties(completion PROPERTIES
    ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR};HOTPATCH_SANITIZE=${HOTPATCH_SANITIZE}"
    TIMEOUT 300)
endif()
