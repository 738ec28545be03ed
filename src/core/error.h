// Errors and exit codes. Two kinds reach the user:
//   InputError    bad recipe, bad data, bad usage: exit code 2, one line naming file/line/key.
//   InternalError a broken invariant or a failed system call: exit code 1, with the source location.
// Everything that can be the user's fault must be an InputError with enough context to fix it.
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kiln {

enum ExitCode : int { kExitOk = 0, kExitInternal = 1, kExitInput = 2, kExitPreempted = 3 };

class Error : public std::runtime_error {
 public:
  Error(std::string msg, int exit_code) : std::runtime_error(std::move(msg)), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

class InputError : public Error {
 public:
  explicit InputError(std::string msg) : Error(std::move(msg), kExitInput) {}
};

class InternalError : public Error {
 public:
  explicit InternalError(std::string msg) : Error(std::move(msg), kExitInternal) {}
};

template <typename... Args>
[[noreturn]] void input_error(fmt::format_string<Args...> f, Args&&... args) {
  throw InputError(fmt::format(f, std::forward<Args>(args)...));
}

// Shortens text quoted in an error message (a bad CSV row, a long line) to n characters.
std::string shorten(const std::string& s, size_t n = 80);

}  // namespace kiln

// KILN_CHECK(cond, "fmt", args...): an internal invariant; the message gets file:line.
#define KILN_CHECK(cond, ...)                                                                     \
  do {                                                                                            \
    if (!(cond))                                                                                  \
      throw ::kiln::InternalError(fmt::format("{}:{}: check `{}` failed: {}", __FILE__, __LINE__, \
                                              #cond, fmt::format(__VA_ARGS__)));                  \
  } while (0)
