# package.cmake — what `make install` (and the Debian packages) put where, and how other
# projects then find hotpatch: a CMake package (find_package(hotpatch 0.2)) and a pkg-config
# file (pkg-config hotpatch).
#
#   bin/hotpatch                          the CLI
#   LIBDIR/libhotpatch.so.0, .so, .a      the library (hotpatch::hotpatch, hotpatch::hotpatch_static)
#   LIBDIR/hotpatch/                      the preload agent and the gflags adapter: no soname, so
#                                         not in the loader's search path (HOTPATCH_PRELOAD_LIBRARY)
#   include/hotpatch.h, hotpatch.hpp      the C API and the C++ layer
#   LIBDIR/cmake/hotpatch/                hotpatchConfig.cmake, its version file, the targets
#   LIBDIR/pkgconfig/hotpatch.pc          Libs.private: capstone, pthread, dl (for static links)
# The man pages and the shell completion come from man.cmake and completion.cmake.
if(NOT HOTPATCH_INSTALL)
  return()
endif()
include(CMakePackageConfigHelpers)

# Installed programs that link libhotpatch find it relative to themselves, so any prefix works
# without LD_LIBRARY_PATH. The Debian build turns this off: there the library is in the
# loader's standard path, and Debian policy forbids an rpath.
file(RELATIVE_PATH HOTPATCH_BIN_TO_LIB /${CMAKE_INSTALL_BINDIR} /${CMAKE_INSTALL_LIBDIR})
function(hotpatch_install_rpath target)
  if(HOTPATCH_INSTALL_RPATH)
    set_target_properties(${target} PROPERTIES INSTALL_RPATH "\$ORIGIN/${HOTPATCH_BIN_TO_LIB}")
  endif()
endfunction()

install(TARGETS hotpatch hotpatch_static EXPORT hotpatchTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS hotpatch_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES include/hotpatch.h include/hotpatch.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES docs/protocol.md docs/security.md README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
# Deferred: the preload agent's fragment comes later in the sorted list.
function(hotpatch_install_private_libs)
  install(TARGETS hotpatch_preload hotpatch_gflags
    LIBRARY DESTINATION ${HOTPATCH_INSTALL_PRIVATE_LIBDIR})
endfunction()
cmake_language(DEFER CALL hotpatch_install_private_libs)

# The examples, only on request (cmake --install BUILD --component examples): they show that an
# installed program finds libhotpatch through its rpath.
if(HOTPATCH_BUILD_TESTS)
  foreach(t simple_server simple_server_cpp)
    hotpatch_install_rpath(${t})
    install(TARGETS ${t} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
      COMPONENT examples EXCLUDE_FROM_ALL)
  endforeach()
endif()

# ---- the CMake package ------------------------------------------------------------------------
set(HOTPATCH_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/hotpatch)
set(HOTPATCH_PRELOAD_PATH ${HOTPATCH_INSTALL_PRIVATE_LIBDIR}/libhotpatch_preload.so)
install(EXPORT hotpatchTargets NAMESPACE hotpatch:: DESTINATION ${HOTPATCH_CMAKE_DIR})
configure_package_config_file(cmake/hotpatchConfig.cmake.in
  ${PROJECT_BINARY_DIR}/package/hotpatchConfig.cmake
  INSTALL_DESTINATION ${HOTPATCH_CMAKE_DIR}
  PATH_VARS HOTPATCH_PRELOAD_PATH CMAKE_INSTALL_INCLUDEDIR)
# 0.x: a new minor version may change the API, so 0.2 accepts 0.2.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/hotpatchConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/hotpatchConfig.cmake
              ${PROJECT_BINARY_DIR}/package/hotpatchConfigVersion.cmake
  DESTINATION ${HOTPATCH_CMAKE_DIR})

# ---- the pkg-config file ----------------------------------------------------------------------
# Written at install time, so that `cmake --install --prefix P` (make install PREFIX=P) gets a
# file naming P rather than the prefix configured at build time. Deferred: capstone's flags come
# from patch.cmake, later in the sorted list.
function(hotpatch_install_pkgconfig)
  # -lcapstone, with -L only for a directory the linker would not search anyway.
  set(flags)
  foreach(dir ${PATCH_CAPSTONE_LIBRARY_DIRS})
    if(NOT dir IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
      list(APPEND flags -L${dir})
    endif()
  endforeach()
  foreach(lib ${PATCH_CAPSTONE_LIBRARIES})
    list(APPEND flags -l${lib})
  endforeach()
  list(JOIN flags " " HOTPATCH_PC_CAPSTONE)
  set(HOTPATCH_PC_PREFIX "@HOTPATCH_PC_PREFIX@")   # kept for the second, install-time pass
  configure_file(cmake/hotpatch.pc.in ${PROJECT_BINARY_DIR}/package/hotpatch.pc.in @ONLY)
  install(CODE "
    set(HOTPATCH_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${PROJECT_BINARY_DIR}/package/hotpatch.pc.in\"
                   \"${PROJECT_BINARY_DIR}/package/hotpatch.pc\" @ONLY)")
  install(FILES ${PROJECT_BINARY_DIR}/package/hotpatch.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
cmake_language(DEFER CALL hotpatch_install_pkgconfig)
