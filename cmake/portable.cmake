# The portable build (-DSPEEDRUN_PORTABLE=ON; scripts/build_portable.sh): binaries that run
# on another x86-64 Linux machine that has only glibc (at least the version they were built
# against), the NVIDIA driver and cuBLASLt — a GPU machine with a CUDA image and none of the
# Debian -dev packages. Everything else is linked statically:
#   - speedrun_lib becomes one shared library, libspeedrun.so, holding OpenBLAS (the OpenMP
#     build, static), gcc's libgfortran and libquadmath (which OpenBLAS needs), PCRE2, the
#     C++ runtime (-static-libstdc++ -static-libgcc) and cudart (static, hidden; the
#     executables that call the runtime directly link their own copy); the executables
#     find it beside them (RPATH $ORIGIN) and stay small;
#   - libgomp goes into each executable instead (its thread-local storage model cannot be
#     linked into a shared object); the library's OpenMP symbols resolve to the executable's;
#   - fmt is used header-only (Debian ships it shared only); GoogleTest, nlohmann-json and
#     CLI11 are static or header-only already; MPI (shared only in Debian) is left out.
# SPEEDRUN_DEPS_ROOT names a folder holding Debian packages unpacked with `dpkg -x` (the
# fallback build on the GPU machine, bench/cuda_check.sh); it is searched before the system.
#
# Sets SPEEDRUN_LIB_TYPE, SPEEDRUN_DEP_LIBS (what speedrun_lib links PUBLIC),
# SPEEDRUN_DEP_PRIVATE (the archives inside it), SPEEDRUN_DEP_INTERFACE (what each
# executable linking speedrun_lib links) and SPEEDRUN_OPENMP_COMPILE.

set(SPEEDRUN_DEPS_ROOT "" CACHE PATH
    "Folder of Debian packages unpacked with dpkg -x, searched first (portable build)")
# ON: search SPEEDRUN_DEPS_ROOT alone (proves the folder holds everything the build needs).
option(SPEEDRUN_DEPS_ONLY "Portable build: find the static libraries in SPEEDRUN_DEPS_ROOT only" OFF)
set(SPEEDRUN_LIB_TYPE SHARED)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
# Only $ORIGIN, also in the build tree: no path of this machine may leak into the binaries.
set(CMAKE_BUILD_WITH_INSTALL_RPATH ON)
set(CMAKE_INSTALL_RPATH "$ORIGIN")
string(APPEND CMAKE_EXE_LINKER_FLAGS " -static-libstdc++ -static-libgcc")
string(APPEND CMAKE_SHARED_LINKER_FLAGS " -static-libstdc++ -static-libgcc")

# Roots end in '/': the unpacked packages first, then the system.
set(_roots)
if(SPEEDRUN_DEPS_ROOT)
  list(APPEND _roots "${SPEEDRUN_DEPS_ROOT}/")
  # find_package(fmt / GTest / CLI11 / nlohmann_json) look here first.
  list(PREPEND CMAKE_PREFIX_PATH "${SPEEDRUN_DEPS_ROOT}/usr")
endif()
if(NOT (SPEEDRUN_DEPS_ONLY AND SPEEDRUN_DEPS_ROOT))
  list(APPEND _roots "/")
endif()

# One static library: the first of `names` under `subdirs` of each root, else fail naming it.
function(speedrun_find_static var what)
  cmake_parse_arguments(A "" "" "NAMES;SUBDIRS" ${ARGN})
  foreach(root ${_roots})
    foreach(sub ${A_SUBDIRS})
      file(GLOB _hits "${root}${sub}")
      foreach(dir ${_hits})
        foreach(n ${A_NAMES})  # a name may be a pattern
          file(GLOB _files "${dir}/${n}")
          if(_files)
            list(GET _files 0 _f)
            set(${var} "${_f}" PARENT_SCOPE)
            message(STATUS "speedrun (portable): ${what}: ${_f}")
            return()
          endif()
        endforeach()
      endforeach()
    endforeach()
  endforeach()
  message(FATAL_ERROR "speedrun (portable): ${what} (${A_NAMES}) not found under ${_roots} "
                      "(${A_SUBDIRS}); install it (scripts/setup.sh) or unpack its .deb there")
endfunction()

function(speedrun_find_header var what header)
  cmake_parse_arguments(A "" "" "SUBDIRS" ${ARGN})
  foreach(root ${_roots})
    foreach(sub ${A_SUBDIRS})
      if(EXISTS "${root}${sub}/${header}")
        set(${var} "${root}${sub}" PARENT_SCOPE)
        return()
      endif()
    endforeach()
  endforeach()
  message(FATAL_ERROR "speedrun (portable): ${what} header ${header} not found under ${_roots}")
endfunction()

# gcc's own static runtime parts: the compiler's first, then an unpacked gcc 12.
function(speedrun_find_gcc_static var name)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=${name}
                  OUTPUT_VARIABLE _p OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(IS_ABSOLUTE "${_p}" AND EXISTS "${_p}" AND NOT SPEEDRUN_DEPS_ONLY)
    set(${var} "${_p}" PARENT_SCOPE)
    message(STATUS "speedrun (portable): ${name}: ${_p}")
    return()
  endif()
  speedrun_find_static(_q "${name}" NAMES ${name} SUBDIRS "usr/lib/gcc/x86_64-linux-gnu/*")
  set(${var} "${_q}" PARENT_SCOPE)
endfunction()

speedrun_find_static(SPEEDRUN_OPENBLAS_A "OpenBLAS (OpenMP build)" NAMES libopenblas.a "libopenblasp-r*.a"
    SUBDIRS usr/lib/x86_64-linux-gnu/openblas-openmp)
speedrun_find_header(SPEEDRUN_OPENBLAS_INCLUDE "OpenBLAS" cblas.h
    SUBDIRS usr/include/x86_64-linux-gnu/openblas-openmp)
speedrun_find_static(SPEEDRUN_PCRE2_A "PCRE2" NAMES libpcre2-8.a
    SUBDIRS usr/lib/x86_64-linux-gnu usr/lib)
speedrun_find_header(SPEEDRUN_PCRE2_INCLUDE "PCRE2" pcre2.h SUBDIRS usr/include)
speedrun_find_gcc_static(SPEEDRUN_GFORTRAN_A libgfortran.a)
speedrun_find_gcc_static(SPEEDRUN_QUADMATH_A libquadmath.a)
speedrun_find_gcc_static(SPEEDRUN_GOMP_A libgomp.a)

find_package(Threads REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)

# Headers for everyone (public headers of backend/cpu include cblas.h); the archives go
# into libspeedrun.so only, which exports their symbols to the executables.
add_library(speedrun_portable_headers INTERFACE)
target_include_directories(speedrun_portable_headers INTERFACE
    ${SPEEDRUN_OPENBLAS_INCLUDE} ${SPEEDRUN_PCRE2_INCLUDE})
set(SPEEDRUN_DEP_LIBS speedrun_portable_headers nlohmann_json::nlohmann_json
    fmt::fmt-header-only Threads::Threads ${CMAKE_DL_LIBS})
set(SPEEDRUN_DEP_PRIVATE ${SPEEDRUN_OPENBLAS_A} ${SPEEDRUN_PCRE2_A} ${SPEEDRUN_GFORTRAN_A}
    ${SPEEDRUN_QUADMATH_A} m)
# OpenMP: compiled in (-fopenmp on C++ sources), libgomp linked by each executable.
set(SPEEDRUN_OPENMP_COMPILE $<$<COMPILE_LANGUAGE:CXX>:-fopenmp>)
set(SPEEDRUN_DEP_INTERFACE ${SPEEDRUN_GOMP_A} Threads::Threads ${CMAKE_DL_LIBS})
# The CUDA runtime: static (the default; no libcudart needed at run time, but
# libspeedrun.so and each executable that calls the runtime directly hold separate copies,
# which share the device's primary context and so its memory, streams and events) or
# shared (one copy; libcudart.so.13 must then be found on the GPU machine).
set(SPEEDRUN_PORTABLE_CUDART static CACHE STRING "Portable build's CUDA runtime: static | shared")
if(SPEEDRUN_PORTABLE_CUDART STREQUAL "shared")
  set(SPEEDRUN_CUDART CUDA::cudart)
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
else()
  set(SPEEDRUN_CUDART CUDA::cudart_static)
endif()
set(SPEEDRUN_MPI OFF CACHE BOOL "" FORCE)
message(STATUS "speedrun: portable build (libspeedrun.so, static dependencies, MPI off)")
