// The model's architecture as a Hugging Face checkpoint describes it in config.json. Every field a
// LLaMA/Mistral-family config can carry that changes the computation is read here; a field of the
// wrong type is an InputError naming the field and the file, never a silent default.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::model {

struct RopeScaling {
  std::string type = "none";             // none | linear | llama3
  double factor = 1.0;
  // llama3 only (Llama 3.1+): frequencies between these wavelengths are interpolated smoothly.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";      // llama | mistral (same computation for sequences inside the window)
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;      // < heads: grouped-query attention
  int64_t head_dim = 0;                  // 0: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;           // q/k/v/o projections carry biases
  bool mlp_bias = false;
  std::string hidden_act = "silu";
  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};  // Llama 3 lists several
  int64_t pad_token_id = -1;             // -1: none (pad with EOS; padding is always masked)
  int64_t sliding_window = 0;            // Mistral; 0: none
  std::string torch_dtype = "float32";
  std::string raw_json;                  // the file as read, so an export keeps fields kiln does not use
  std::string source;                    // the file it came from, for messages

  int64_t dim_per_head() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  int64_t eos() const { return eos_token_ids.empty() ? 2 : eos_token_ids.front(); }
  bool is_eos(int64_t id) const;

  // Reads config.json from a model folder or a file path. Throws InputError naming the file and field.
  static LlamaConfig from_file(const std::string& path);
  static LlamaConfig from_json_text(const std::string& text, const std::string& source);
  // The config.json of an export: raw_json with the fields kiln knows rewritten from this struct.
  std::string to_json_text() const;
  // Inverse RoPE frequencies (head_dim / 2 of them) after rope_scaling, in float64.
  std::vector<double> inv_freq() const;
};

}  // namespace kiln::model
