// A model's config.json, and what kiln derives from it (RoPE frequencies, the export's rewrite).
#include "fuzz/fuzz.h"
#include "model/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  return kiln::fuzz::expect_clean([&] {
    auto c = kiln::model::LlamaConfig::from_json_text(text, "config.json");
    c.inv_freq();
    c.to_json_text();
  });
}
