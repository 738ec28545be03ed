# libtorch comes from PyTorch's `torch` wheel (2.11.0, CUDA 13.0), installed by scripts/python-env.sh
# into the project's .venv; every other dependency is a Debian package (scripts/install-deps.sh).
# Another libtorch is used when -DKILN_TORCH_DIR=<prefix>/share/cmake/Torch names it.
set(KILN_TORCH_DIR "" CACHE PATH "libtorch's CMake package folder (default: the torch wheel in .venv)")
if(KILN_TORCH_DIR)
  set(Torch_DIR ${KILN_TORCH_DIR} CACHE PATH "libtorch's CMake package folder" FORCE)
else()
  file(GLOB kiln_venv_torch LIST_DIRECTORIES true
       ${PROJECT_SOURCE_DIR}/.venv/lib/python3*/site-packages/torch/share/cmake/Torch)
  if(NOT kiln_venv_torch)
    message(FATAL_ERROR "libtorch not found: run scripts/python-env.sh (it installs the torch wheel into "
                        "${PROJECT_SOURCE_DIR}/.venv) or pass -DKILN_TORCH_DIR=<prefix>/share/cmake/Torch")
  endif()
  list(GET kiln_venv_torch 0 kiln_venv_torch)
  set(Torch_DIR ${kiln_venv_torch} CACHE PATH "libtorch's CMake package folder" FORCE)
endif()
get_filename_component(KILN_TORCH_PREFIX ${Torch_DIR}/../../.. ABSOLUTE)

# A CUDA libtorch's own CMake package needs the CUDA toolkit (nvcc, headers). Without one, or with
# KILN_CUDA=OFF, kiln links the CPU half of the same libtorch (libtorch_cpu, libc10) directly.
if(NOT KILN_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
endif()
if(EXISTS ${KILN_TORCH_PREFIX}/lib/libtorch_cuda.so AND NOT CUDAToolkit_FOUND)
  if(KILN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KILN_CUDA=ON: libtorch has CUDA, but the CUDA toolkit was not found "
                        "(set CUDAToolkit_ROOT, e.g. /usr/local/cuda)")
  endif()
  file(READ ${Torch_DIR}/TorchConfigVersion.cmake kiln_torch_version_file)
  string(REGEX MATCH "PACKAGE_VERSION \"([0-9.]+)" _ ${kiln_torch_version_file})
  set(Torch_VERSION ${CMAKE_MATCH_1})
  set(TORCH_INCLUDE_DIRS ${KILN_TORCH_PREFIX}/include ${KILN_TORCH_PREFIX}/include/torch/csrc/api/include)
  set(TORCH_LIBRARIES ${KILN_TORCH_PREFIX}/lib/libtorch_cpu.so ${KILN_TORCH_PREFIX}/lib/libc10.so)
  set(TORCH_CXX_FLAGS -D_GLIBCXX_USE_CXX11_ABI=1)
else()
  # TorchConfig looks for Caffe2 in the default places before its own folder: a distribution's
  # libtorch (Debian's libtorch-dev) would win. Name the wheel's own.
  set(Caffe2_DIR ${Torch_DIR}/../Caffe2 CACHE PATH "libtorch's Caffe2 CMake package folder" FORCE)
  # Its find_library calls search the system before its own lib/ too.
  # Each cache variable as TorchConfig names it, then the library it holds.
  foreach(pair TORCH_LIBRARY:torch c10_LIBRARY:c10 C10_CUDA_LIBRARY:c10_cuda kineto_LIBRARY:kineto)
    string(REPLACE ":" ";" pair ${pair})
    list(GET pair 0 var)
    list(GET pair 1 lib)
    if(EXISTS ${KILN_TORCH_PREFIX}/lib/lib${lib}.so)
      set(${var} ${KILN_TORCH_PREFIX}/lib/lib${lib}.so CACHE FILEPATH "" FORCE)
    endif()
  endforeach()
  find_package(Torch REQUIRED)
  # TORCH_CXX_FLAGS is one string; the targets below want a list.
  separate_arguments(TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")
endif()
find_package(MPI REQUIRED COMPONENTS CXX)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
# PCRE2 (8-bit): the Unicode-property regexes of tokenizer.json pre-tokenizers.
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
find_package(Threads REQUIRED)

# Torch's CMake config exposes CUDA through TORCH_LIBRARIES containing c10_cuda.
set(KILN_TORCH_HAS_CUDA OFF)
if(TARGET c10_cuda OR TORCH_CUDA_LIBRARIES)
  set(KILN_TORCH_HAS_CUDA ON)
endif()
# NCCL: the wheel's own (nvidia-nccl-cu13, the one libtorch_cuda loads) before the CUDA toolkit's, so
# one libnccl.so.2 is in the process.
set(kiln_wheel_nccl ${KILN_TORCH_PREFIX}/../nvidia/nccl)
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${kiln_wheel_nccl}/include ENV NCCL_HOME /usr/local/cuda/include
          PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${kiln_wheel_nccl}/lib ENV NCCL_HOME /usr/local/cuda/lib64
             PATH_SUFFIXES lib lib64)

if(KILN_CUDA STREQUAL "AUTO")
  if(KILN_TORCH_HAS_CUDA AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(KILN_WITH_CUDA ON)
  else()
    set(KILN_WITH_CUDA OFF)
  endif()
elseif(KILN_CUDA)
  if(NOT (KILN_TORCH_HAS_CUDA AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY))
    message(FATAL_ERROR "KILN_CUDA=ON but libtorch has no CUDA or nccl.h/libnccl was not found")
  endif()
  set(KILN_WITH_CUDA ON)
else()
  set(KILN_WITH_CUDA OFF)
endif()
message(STATUS "kiln: libtorch ${Torch_VERSION}, CUDA/NCCL code paths: ${KILN_WITH_CUDA}")

if(NOT TARGET kiln::nccl AND KILN_WITH_CUDA)
  add_library(kiln::nccl UNKNOWN IMPORTED)
  set_target_properties(kiln::nccl PROPERTIES IMPORTED_LOCATION ${NCCL_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
endif()

# Torch's imported targets carry -D_GLIBCXX_USE_CXX11_ABI and include dirs; wrap them once.
add_library(kiln_torch INTERFACE)
# The wheel's libtorch libraries export their own, statically linked copies of parts of libstdc++
# (std::filesystem among them, from the newer GCC they were built with), and a program's calls bind
# to the first library in its load order that defines them: remove_all crashed in libtorch.so's copy.
# libstdc++.so.6 is therefore named before libtorch, so the system's definitions come first.
target_link_libraries(kiln_torch INTERFACE -Wl,--push-state,--no-as-needed stdc++ -Wl,--pop-state ${TORCH_LIBRARIES})
# libtorch ships fmt 12 headers; kiln and spdlog build against Debian's libfmt (9). A folder holding
# only a link to Debian's fmt comes first, so `#include <fmt/...>` is the library kiln links.
set(kiln_fmt_first ${PROJECT_BINARY_DIR}/include-first)
file(MAKE_DIRECTORY ${kiln_fmt_first})
file(CREATE_LINK /usr/include/fmt ${kiln_fmt_first}/fmt SYMBOLIC)
target_include_directories(kiln_torch BEFORE INTERFACE ${kiln_fmt_first})
target_include_directories(kiln_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_compile_options(kiln_torch INTERFACE ${TORCH_CXX_FLAGS})

add_library(kiln_hdf5 INTERFACE)
target_include_directories(kiln_hdf5 INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(kiln_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(kiln_hdf5 INTERFACE ${HDF5_DEFINITIONS})

# Adds the warnings, the torch precompiled header and the version macros to a kiln target.
function(kiln_target_defaults tgt)
  target_compile_options(${tgt} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  target_include_directories(${tgt} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  if(KILN_WITH_CUDA)
    target_compile_definitions(${tgt} PUBLIC KILN_WITH_CUDA=1)
  endif()
endfunction()

# Adds every subfolder of the current source folder that has a CMakeLists.txt, in name order: the
# methods (src/methods/<name>/) and their tests (tests/methods/<name>/) join the build by existing.
function(kiln_add_each_subdirectory)
  file(GLOB dirs LIST_DIRECTORIES true CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*)
  list(SORT dirs)
  foreach(dir ${dirs})
    if(IS_DIRECTORY ${dir} AND EXISTS ${dir}/CMakeLists.txt)
      add_subdirectory(${dir})
    endif()
  endforeach()
endfunction()
