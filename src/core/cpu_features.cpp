#include "core/cpu_features.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace kiln {

bool cpu_has_native_bf16() {
  const char* over = std::getenv("KILN_CPUINFO");
  std::ifstream in(over && *over ? over : "/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    while (words >> w)
      if (w == "avx512_bf16" || w == "amx_bf16") return true;
    return false;  // the first processor's flags stand for all
  }
  return false;
}

std::string bf16_cpu_note(const std::string& what) {
  if (cpu_has_native_bf16()) return "";
  return what + " on a CPU without avx512_bf16/amx_bf16: libtorch emulates bfloat16 through float32 here, "
                "so it saves memory but runs slower than float32";
}

}  // namespace kiln
