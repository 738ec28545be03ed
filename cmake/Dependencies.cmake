# Every dependency is a Debian package (see scripts/install-deps.sh).
find_package(Torch REQUIRED)
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
find_path(NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include ENV NCCL_HOME PATH_SUFFIXES include)
find_library(NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 /usr/local/cuda/lib ENV NCCL_HOME PATH_SUFFIXES lib lib64)

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
target_link_libraries(kiln_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(kiln_torch INTERFACE ${TORCH_INCLUDE_DIRS})
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
