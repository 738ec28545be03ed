#include "core/error.h"

namespace kiln {

std::string shorten(const std::string& s, size_t n) {
  std::string out;
  out.reserve(std::min(s.size(), n + 3));
  for (char c : s) {
    if (out.size() >= n) {
      out += "...";
      break;
    }
    out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  }
  return out;
}

}  // namespace kiln
