// What the host CPU computes natively, where a warning depends on it.
#pragma once
#include <string>

namespace kiln {

// The bfloat16 instructions /proc/cpuinfo lists: "amx_bf16" (Sapphire Rapids and later: bf16 tile
// matrix products), else "avx512_bf16" (bf16 dot products), else "" (libtorch converts through
// float32). KILN_CPUINFO overrides the file (tests).
std::string cpu_bf16_support();

// The one line kiln logs once when bfloat16 is asked for on a CPU, empty where it is expected to
// pay off (AMX). Measured on a 2-core avx512_bf16 Xeon without AMX with libtorch 2.11 (docs/model.md):
// bf16 matrix products ran at 0.57x float32's FLOP/s and a LoRA step of SmolLM2-135M at 0.63x,
// so without AMX bf16 saves memory, not time. `what` names the setting.
std::string bf16_cpu_note(const std::string& what);

}  // namespace kiln
