# man.cmake — the man pages hotpatch(1), libhotpatch(3) and hotpatch-protocol(7), and their
# tests.
#
# Each page is a short scdoc template (docs/man/*.scd.in) filled by tools/manpage.py from the
# one source of its content: the command list of hotpatch(1) from the agent's dispatch table
# (tools/hotpatch_commands), the API of libhotpatch(3) from the headers' doc comments, the whole
# of hotpatch-protocol(7) from docs/protocol.md. scdoc (Debian: scdoc) renders them into
# build/man/. Off by default in a parent project (HOTPATCH_BUILD_MAN), which has no use for
# them and may lack scdoc.
if(NOT HOTPATCH_BUILD_MAN)
  return()
endif()
find_program(HOTPATCH_SCDOC scdoc)
find_program(HOTPATCH_DOC_PYTHON NAMES python3 REQUIRED)
if(NOT HOTPATCH_SCDOC)
  message(FATAL_ERROR "scdoc renders the man pages: apt-get install scdoc (scripts/deps.sh), "
                      "or configure with -DHOTPATCH_BUILD_MAN=OFF")
endif()

set(HOTPATCH_MAN_DIR ${PROJECT_BINARY_DIR}/man)
set(man_src ${CMAKE_CURRENT_SOURCE_DIR}/docs/man)
set(manpage ${HOTPATCH_DOC_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/tools/manpage.py)
file(MAKE_DIRECTORY ${HOTPATCH_MAN_DIR})

add_custom_command(OUTPUT ${HOTPATCH_MAN_DIR}/commands.scd
  COMMAND hotpatch_commands scdoc ${HOTPATCH_MAN_DIR}/commands.scd
  DEPENDS hotpatch_commands
  COMMENT "The command list of hotpatch(1), from the dispatch table")

# hotpatch_man_page(NAME SECTION [DEPENDS files...] INSERTS KEY=KIND:FILE...)
function(hotpatch_man_page name section)
  cmake_parse_arguments(PARSE_ARGV 2 arg "" "" "DEPENDS;INSERTS")
  set(out ${HOTPATCH_MAN_DIR}/${name}.${section})
  set(inserts)
  foreach(i ${arg_INSERTS})
    list(APPEND inserts --insert ${i})
  endforeach()
  add_custom_command(OUTPUT ${out}
    COMMAND ${manpage} ${man_src}/${name}.${section}.scd.in ${out} --version ${PROJECT_VERSION}
            --scdoc ${HOTPATCH_SCDOC} ${inserts}
    DEPENDS ${man_src}/${name}.${section}.scd.in ${CMAKE_CURRENT_SOURCE_DIR}/tools/manpage.py
            ${arg_DEPENDS}
    COMMENT "Man page ${name}(${section})" VERBATIM)
  set_property(GLOBAL APPEND PROPERTY HOTPATCH_MAN_PAGES ${out})
  if(HOTPATCH_INSTALL)
    install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  endif()
endfunction()

set(inc ${CMAKE_CURRENT_SOURCE_DIR}/include)
hotpatch_man_page(hotpatch 1 DEPENDS ${HOTPATCH_MAN_DIR}/commands.scd
  INSERTS COMMANDS=scdoc:${HOTPATCH_MAN_DIR}/commands.scd)
hotpatch_man_page(libhotpatch 3 DEPENDS ${inc}/hotpatch.h ${inc}/hotpatch.hpp
  INSERTS INTRO=c-intro:${inc}/hotpatch.h C_API=c-header:${inc}/hotpatch.h
          CXX_INTRO=c-intro:${inc}/hotpatch.hpp CXX_API=cxx-header:${inc}/hotpatch.hpp)
hotpatch_man_page(hotpatch-protocol 7 DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/docs/protocol.md
  INSERTS PROTOCOL=markdown:${CMAKE_CURRENT_SOURCE_DIR}/docs/protocol.md)
get_property(HOTPATCH_MAN_PAGES GLOBAL PROPERTY HOTPATCH_MAN_PAGES)
add_custom_target(hotpatch_man ALL DEPENDS ${HOTPATCH_MAN_PAGES})

# ---- tests --------------------------------------------------------------------------------------
if(NOT HOTPATCH_BUILD_TESTS)
  return()
endif()
find_program(HOTPATCH_GROFF groff REQUIRED)
# Every page renders with no troff warning at all, at the width of an 80-column terminal.
add_test(NAME man_render
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/tests/man/render_check.sh ${HOTPATCH_GROFF}
          ${HOTPATCH_MAN_PAGES})
# What the pages promise: every command of the agent's `help`, every option of `hotpatch
# --help`, every public function of the headers.
add_test(NAME man_cover
  COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_man.py)
set_tests_properties(man_cover PROPERTIES
  ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR};HOTPATCH_GROFF=${HOTPATCH_GROFF}")
