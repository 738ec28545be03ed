// What the host CPU computes natively, where kiln's choice of a default or a warning depends on it.
#pragma once
#include <string>

namespace kiln {

// True when /proc/cpuinfo lists avx512_bf16 or amx_bf16: bfloat16 matrix products run natively
// (oneDNN). Without them libtorch still computes in bfloat16 on CPU, by converting to float32 and
// back, so bf16 there saves memory but is slower than float32. KILN_CPUINFO overrides the file
// (tests).
bool cpu_has_native_bf16();

// The one-line note kiln logs once when bfloat16 is asked for on a CPU without native support
// (empty when the CPU has it); `what` names the setting ("train.precision: bf16").
std::string bf16_cpu_note(const std::string& what);

}  // namespace kiln
