// The memory plan's count of what trains: full fine-tuning minus model.freeze (a tied head freezes
// with the embeddings), LoRA plus lora.extra_trainable. stories260K: vocabulary 512, width 64, tied.
#include <gtest/gtest.h>

#include "core/config.h"
#include "model/hf_config.h"
#include "train/memory_plan.h"

using namespace kiln;

namespace {

const std::string kModel = std::string(KILN_SOURCE_DIR) + "/models/stories260K";

// `model` continues the model section; `rest` adds sections.
train::MemoryPlan plan(const std::string& model_keys, const std::string& rest) {
  const Recipe r = read_recipe_tree(
      recipe::parse_string("name: t\nmethod: lm\nmodel:\n  path: " + kModel + "\n" + model_keys + rest, "test.yaml"),
      "test.yaml");
  return train::plan_memory(r, model::LlamaConfig::from_file(kModel), 1, 1, c10::Device(c10::kCPU));
}

}  // namespace

TEST(MemoryPlan, FrozenModulesDoNotTrain) {
  const auto full = plan("", "lora:\n  enabled: false\n");
  EXPECT_EQ(full.trainable, full.parameters);
  const int64_t embed = 512 * 64;
  for (const char* frozen : {"[embed_tokens]", "[lm_head]", "[embed_tokens, lm_head]"}) {
    const auto p = plan(std::string("  freeze: ") + frozen + "\n", "lora:\n  enabled: false\n");
    EXPECT_EQ(p.trainable, full.parameters - embed) << frozen;
    EXPECT_DOUBLE_EQ(p.gradients, double(full.parameters - embed) * 4.0) << frozen;
    EXPECT_DOUBLE_EQ(p.optimizer, 8.0 * double(full.parameters - embed)) << frozen;
  }
  const auto lora = plan("", "lora:\n  r: 4\n  extra_trainable: [lm_head]\n");
  EXPECT_EQ(lora.trainable, 5 * 4 * ((64 + 64) + (64 + 32)) + embed);  // q and v (4 kv heads of 8) of 5 layers, the tied head
}
