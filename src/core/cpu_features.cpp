#include "core/cpu_features.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace kiln {

std::string cpu_bf16_support() {
  const char* over = std::getenv("KILN_CPUINFO");
  std::ifstream in(over && *over ? over : "/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w, best;
    while (words >> w) {
      if (w == "amx_bf16") return w;
      if (w == "avx512_bf16") best = w;
    }
    return best;  // the first processor's flags stand for all
  }
  return "";
}

std::string bf16_cpu_note(const std::string& what) {
  const std::string s = cpu_bf16_support();
  if (s == "amx_bf16") return "";
  return what + (s.empty() ? " on a CPU without bf16 instructions (libtorch converts through float32)"
                           : " on a CPU with avx512_bf16 but no AMX") +
         ": expect it slower than float32 (a LoRA step ran at 0.63x on an avx512_bf16 CPU without AMX, "
         "docs/model.md); it saves memory, not time";
}

}  // namespace kiln
