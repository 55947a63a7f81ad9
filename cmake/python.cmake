# python.cmake — the Python client (python/hotpatch): its wheel, and its tests run by CTest.
#
# `make` builds build/python/hotpatch-VERSION-py3-none-any.whl with the package's own build
# backend (python/backend/hotpatch_backend.py, standard library only): a pure-Python wheel that
# `pip install --no-index` puts into a plain venv of any supported Python, offline. The Debian
# package python3-hotpatch is unpacked from the same wheel.
#
# The tests: one pytest file drives the Python CLI and API against the real example servers and
# compares the Python CLI with the C CLI byte for byte, so it needs the C client and both
# examples built first (they are ordinary targets of this build). PYTHONPATH points at the
# package source, so the tests exercise the tree as checked out. test_python_package.py
# installs the wheel and the source tree into fresh venvs of every Python it finds.
# Not under TSan: the client is not what TSan examines, and its `lib unload` steps need the
# thread stop that TSan's deferred signals make impossible.
set(HOTPATCH_PYTHON_DIR ${CMAKE_CURRENT_SOURCE_DIR}/python)
file(STRINGS ${HOTPATCH_PYTHON_DIR}/hotpatch/__init__.py HOTPATCH_PYTHON_VERSION
     REGEX "^__version__ = ")
string(REGEX REPLACE "^__version__ = \"([^\"]*)\".*" "\\1" HOTPATCH_PYTHON_VERSION
       "${HOTPATCH_PYTHON_VERSION}")
if(NOT HOTPATCH_PYTHON_VERSION STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR "python/hotpatch/__init__.py says ${HOTPATCH_PYTHON_VERSION}; the project "
                      "is ${PROJECT_VERSION}")
endif()

if(HOTPATCH_BUILD_PYTHON)
  find_program(HOTPATCH_WHEEL_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  find_program(HOTPATCH_WHEEL_PYTHON NAMES python3 REQUIRED)
  set(HOTPATCH_WHEEL
      ${PROJECT_BINARY_DIR}/python/hotpatch-${PROJECT_VERSION}-py3-none-any.whl)
  file(GLOB HOTPATCH_PYTHON_SOURCES CONFIGURE_DEPENDS ${HOTPATCH_PYTHON_DIR}/hotpatch/*)
  add_custom_command(OUTPUT ${HOTPATCH_WHEEL}
    COMMAND ${HOTPATCH_WHEEL_PYTHON} -B ${HOTPATCH_PYTHON_DIR}/backend/hotpatch_backend.py wheel
            ${PROJECT_BINARY_DIR}/python
    DEPENDS ${HOTPATCH_PYTHON_SOURCES} ${HOTPATCH_PYTHON_DIR}/pyproject.toml
            ${HOTPATCH_PYTHON_DIR}/README.md ${HOTPATCH_PYTHON_DIR}/backend/hotpatch_backend.py
    COMMENT "Python wheel ${HOTPATCH_WHEEL}" VERBATIM)
  add_custom_target(hotpatch_python_wheel ALL DEPENDS ${HOTPATCH_WHEEL})
endif()

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

# Installing offline: the wheel and `pip install ./python` into venvs of every supported Python
# found, and the tree left as it was.
if(HOTPATCH_BUILD_PYTHON)
  add_test(NAME python_package
    COMMAND ${HOTPATCH_PYTEST} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_python_package.py)
  set_tests_properties(python_package PROPERTIES
    ENVIRONMENT "HOTPATCH_BUILD_DIR=${PROJECT_BINARY_DIR};HOTPATCH_WHEEL=${HOTPATCH_WHEEL}"
    TIMEOUT 600 RESOURCE_LOCK ns_last_pid)   # venvs and pip fork a lot; see tests/CMakeLists.txt
endif()
