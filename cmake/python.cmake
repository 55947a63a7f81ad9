# python.cmake — tests of the Python client (python/hotpatch), run by CTest.
#
# One pytest file drives the Python CLI and API against the real example servers and compares
# the Python CLI with the C CLI byte for byte, so it needs the C client and both examples built
# first (they are ordinary targets of this build). PYTHONPATH points at the package source, so
# the tests exercise the tree as checked out; one test also installs it into a fresh venv.
# Not under TSan: the client is not what TSan examines, and its `lib unload` steps need the
# thread stop that TSan's deferred signals make impossible.
if(NOT HOTPATCH_BUILD_TESTS OR HOTPATCH_SANITIZE STREQUAL "thread")
  return()
endif()
add_test(NAME python_client
  COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_python_client.py)
set_tests_properties(python_client PROPERTIES
  ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR};PYTHONPATH=${CMAKE_CURRENT_SOURCE_DIR}/python"
  TIMEOUT 600)

# The client side of the security pass: finding and verifying the agent, lib load by
# descriptor, terminal escaping. Real users (hotpatch-t1, hotpatch-t2) and processes of their
# own; the pid-reuse cases write /proc/sys/kernel/ns_last_pid, so they are a test of their own
# that no other user of that file runs beside (RESOURCE_LOCK ns_last_pid).
add_test(NAME python_security
  COMMAND ${HOTPATCH_PYTEST} -k "not ns_last_pid"
          ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_python_security.py)
add_test(NAME python_security_pid_reuse
  COMMAND ${HOTPATCH_PYTEST} -k ns_last_pid
          ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_python_security.py)
set_tests_properties(python_security python_security_pid_reuse PROPERTIES
  ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR};PYTHONPATH=${CMAKE_CURRENT_SOURCE_DIR}/python"
  TIMEOUT 600)
set_tests_properties(python_security_pid_reuse PROPERTIES RESOURCE_LOCK ns_last_pid)
