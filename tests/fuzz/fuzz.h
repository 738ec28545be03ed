// Shared by the fuzz targets. Each target defines LLVMFuzzerTestOneInput: the input is a file kiln
// reads (a recipe, a data file, a model's files, a checkpoint). A clean InputError is the expected
// outcome of a bad file; anything else (another exception, a crash, a sanitizer report, a hang)
// is a finding. Built two ways (tests/fuzz/CMakeLists.txt): with libFuzzer under clang, and
// everywhere as a replay program that runs the committed corpus once per ctest run.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace kiln::fuzz {

// A private directory for this process's input files, removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string d = (std::filesystem::temp_directory_path() / ("kiln-fuzz-" + std::to_string(getpid()))).string();
    std::filesystem::create_directories(d);
    return d;
  }();
  static const struct Cleanup {
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup;
  return dir;
}

// Writes bytes to <scratch>/<name> and returns the path.
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  std::string path = scratch_dir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return path;
}

// Runs f; an InputError (the clean refusal of a bad file) is swallowed, everything else escapes.
template <typename F>
int expect_clean(F&& f) {
  try {
    f();
  } catch (const InputError&) {
  }
  return 0;
}

}  // namespace kiln::fuzz
