# KILN_SANITIZE / KILN_FUZZ: instrument every target kiln compiles (not the prebuilt libraries it
# links: libtorch, MPI, HDF5 stay as Debian built them). Any finding aborts (no recovery), so a test
# that meets one fails. docs/testing.md says how to run them.
if(KILN_FUZZ AND NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "KILN_FUZZ needs clang (libFuzzer): configure with CXX=clang++ CC=clang, or use the `sanitize` preset")
endif()
if(KILN_FUZZ AND NOT KILN_SANITIZE)
  set(KILN_SANITIZE address,undefined)
endif()
if(KILN_SANITIZE)
  add_compile_options(-fsanitize=${KILN_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${KILN_SANITIZE})
  message(STATUS "kiln: sanitizers ${KILN_SANITIZE}")
endif()
if(KILN_FUZZ)
  # Coverage for libFuzzer in every kiln library; the fuzz targets add -fsanitize=fuzzer (its main).
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
