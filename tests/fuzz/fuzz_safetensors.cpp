// A .safetensors file: header parsing, then every tensor read (offsets, dtypes and shapes checked
// against the file before a byte is touched).
#include <ATen/ATen.h>

#include "fuzz/fuzz.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string path = kiln::fuzz::write_input("model.safetensors", data, size);
  return kiln::fuzz::expect_clean([&] {
    kiln::model::SafeTensorsFile f(path);
    for (auto& [name, e] : f.entries()) {
      at::Tensor t = f.load(name);
      if (t.numel() > 0 && t.is_floating_point()) t.to(at::kFloat).sum();
    }
  });
}
