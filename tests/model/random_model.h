// A small random LLaMA for model tests: untied or tied head, GQA (6 heads over 2 key/value heads).
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "model/llama.h"

namespace kiln_test {

inline kiln::model::Llama random_model(bool tied = false) {
  auto c = kiln::model::LlamaConfig::from_json_text(
      R"({"model_type":"llama","vocab_size":300,"hidden_size":48,"intermediate_size":96,"num_hidden_layers":3,
          "num_attention_heads":6,"num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":10000.0,
          "tie_word_embeddings":)" + std::string(tied ? "true" : "false") + "}",
      "test-config");
  at::manual_seed(3);
  kiln::model::Llama m(c);
  m->init_weights(0.1);
  return m;
}

}  // namespace kiln_test
