// config.json and safetensors reading, errors a user can fix from the message alone, sharded and
// low-precision checkpoints, and PEFT / merged exports loaded back bit for bit.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "model/hf_io.h"
#include "model/lora.h"
#include "model/safetensors.h"

using namespace kiln::model;
namespace fs = std::filesystem;

namespace {

const std::string kHf = std::string(KILN_SHARED_DIR) + "/models/stories260K/hf";

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kiln-model-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::string str() const { return path.string(); }
};

std::string read(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

// A copy of the stories folder with config.json edited by `edit`.
void copy_model(const fs::path& dst, const std::function<void(nlohmann::json&)>& edit = {}) {
  fs::create_directories(dst);
  for (const char* f : {"model.safetensors", "tokenizer.model"}) fs::copy_file(fs::path(kHf) / f, dst / f);
  auto j = nlohmann::json::parse(read(fs::path(kHf) / "config.json"));
  if (edit) edit(j);
  write(dst / "config.json", j.dump(2));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::InputError& e) {
    return e.what();
  }
  return "<no InputError>";
}

at::Tensor logits(Llama& m, const at::Tensor& ids) {
  at::NoGradGuard ng;
  m->eval();
  return m->forward(ids);
}

const at::Tensor& sample_ids() {
  static at::Tensor ids = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378, 432, 383, 286, 17, 99}, at::kLong).view({1, -1});
  return ids;
}

}  // namespace

TEST(ModelConfig, ReadsStoriesConfig) {
  auto c = LlamaConfig::from_file(kHf);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.dim_per_head(), 8);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos(), 2);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
}

TEST(ModelConfig, WrongTypeNamesFieldAndFile) {
  TempDir d;
  write(d.path / "config.json", R"({"vocab_size": 512, "hidden_size": "64", "intermediate_size": 172,
       "num_hidden_layers": 5, "num_attention_heads": 8})");
  std::string e = error_of([&] { LlamaConfig::from_file(d.str()); });
  EXPECT_NE(e.find("hidden_size"), std::string::npos) << e;
  EXPECT_NE(e.find((d.path / "config.json").string()), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
  e = error_of([&] {
    LlamaConfig::from_json_text(R"({"vocab_size":1,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
      "num_attention_heads":2,"tie_word_embeddings":"yes"})", "x/config.json");
  });
  EXPECT_NE(e.find("tie_word_embeddings"), std::string::npos) << e;
  e = error_of([&] {
    LlamaConfig::from_json_text(R"({"vocab_size":1,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
      "num_attention_heads":2,"rope_scaling":{"type":"yarn","factor":4}})", "x/config.json");
  });
  EXPECT_NE(e.find("rope_scaling"), std::string::npos) << e;
  e = error_of([&] { LlamaConfig::from_json_text(R"({"vocab_size":1})", "x/config.json"); });
  EXPECT_NE(e.find("hidden_size"), std::string::npos) << e;
}

TEST(ModelConfig, RopeScaling) {
  std::string base = R"({"vocab_size":10,"hidden_size":512,"intermediate_size":8,"num_hidden_layers":1,
      "num_attention_heads":4,"rope_theta":500000.0)";
  auto plain = LlamaConfig::from_json_text(base + "}", "c").inv_freq();
  auto lin = LlamaConfig::from_json_text(base + R"(,"rope_scaling":{"type":"linear","factor":4.0}})", "c").inv_freq();
  auto l3 = LlamaConfig::from_json_text(
      base + R"(,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                "original_max_position_embeddings":8192}})", "c").inv_freq();
  ASSERT_EQ(plain.size(), 64u);
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_DOUBLE_EQ(lin[i], plain[i] / 4);
    const double wavelen = 2 * M_PI / plain[i];
    if (wavelen < 8192.0 / 4) EXPECT_DOUBLE_EQ(l3[i], plain[i]);          // high frequencies kept
    else if (wavelen > 8192.0) EXPECT_DOUBLE_EQ(l3[i], plain[i] / 8);     // low frequencies scaled
    else EXPECT_TRUE(l3[i] < plain[i] && l3[i] > plain[i] / 8);           // blended
  }
}

TEST(ModelConfig, KilnClassifierFolderReadsAsLlama) {
  // A merged ls_llama export that names kiln's own Python classes (methods/ls_llama/hf_code.h).
  auto c = LlamaConfig::from_json_text(
      R"({"model_type":"kiln_llama","architectures":["KilnLlamaForSequenceClassification"],
          "auto_map":{"AutoConfig":"modeling_kiln_llama.KilnLlamaConfig"},"kiln_pooling":"mean",
          "kiln_attention":"causal","kiln_pads":"masked","num_labels":2,"vocab_size":10,"hidden_size":8,
          "intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2})",
      "x/config.json");
  EXPECT_EQ(c.model_type, "llama");
  // What named kiln's classes does not follow the weights into a later export.
  auto j = nlohmann::json::parse(c.to_json_text());
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  for (const char* k : {"auto_map", "kiln_pooling", "kiln_attention", "kiln_pads"}) EXPECT_FALSE(j.contains(k)) << k;
}

TEST(ModelLoad, MissingFilesAreInputErrors) {
  TempDir d;
  std::string e = error_of([&] { load_pretrained(d.str()); });
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  copy_model(d.path);
  fs::remove(d.path / "model.safetensors");
  e = error_of([&] { load_pretrained(d.str()); });
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find(d.str()), std::string::npos) << e;
  e = error_of([&] { load_tokenizer(d.str() + "/nowhere"); });
  EXPECT_NE(e.find("nowhere"), std::string::npos) << e;
}

TEST(ModelLoad, WrongShapeNamesTensorBothShapesAndFile) {
  TempDir d;
  // A checkpoint whose q_proj of layer 2 is transposed-shaped: [64, 32] instead of [64, 64]... built
  // by rewriting the real file with one tensor replaced.
  fs::create_directories(d.path);
  SafeTensorsFile src(kHf + "/model.safetensors");
  NamedTensorList ts;
  for (const auto& [name, e] : src.entries()) {
    at::Tensor t = src.load(name);
    if (name == "model.layers.2.self_attn.k_proj.weight") t = t.narrow(0, 0, 16).contiguous();
    ts.emplace_back(name, t);
  }
  write_safetensors((d.path / "model.safetensors").string(), ts);
  fs::copy_file(fs::path(kHf) / "config.json", d.path / "config.json");
  std::string e = error_of([&] { load_pretrained(d.str()); });
  EXPECT_NE(e.find("model.layers.2.self_attn.k_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[16, 64]"), std::string::npos) << e;
  EXPECT_NE(e.find("[32, 64]"), std::string::npos) << e;
  EXPECT_NE(e.find((d.path / "model.safetensors").string()), std::string::npos) << e;

  // Missing and unexpected tensors.
  ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto& p) { return p.first == "model.norm.weight"; }), ts.end());
  for (auto& p : ts)
    if (p.first == "model.layers.2.self_attn.k_proj.weight") p.second = src.load(p.first);
  write_safetensors((d.path / "model.safetensors").string(), ts);
  e = error_of([&] { load_pretrained(d.str()); });
  EXPECT_NE(e.find("model.norm.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  ts.emplace_back("model.norm.weight", src.load("model.norm.weight"));
  ts.emplace_back("model.layers.9.mlp.up_proj.weight", at::zeros({4, 4}));
  write_safetensors((d.path / "model.safetensors").string(), ts);
  e = error_of([&] { load_pretrained(d.str()); });
  EXPECT_NE(e.find("unexpected tensor `model.layers.9.mlp.up_proj.weight`"), std::string::npos) << e;

  // A config that disagrees with the weights: the error names the tensor and config.json.
  TempDir d2;
  copy_model(d2.path, [](nlohmann::json& j) { j["intermediate_size"] = 128; });
  e = error_of([&] { load_pretrained(d2.str()); });
  EXPECT_NE(e.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << e;  // first in file order
  EXPECT_NE(e.find("[64, 172]"), std::string::npos) << e;
  EXPECT_NE(e.find("[64, 128]"), std::string::npos) << e;
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;

  // A truncated file.
  TempDir d3;
  copy_model(d3.path);
  fs::resize_file(d3.path / "model.safetensors", fs::file_size(d3.path / "model.safetensors") - 100);
  e = error_of([&] { load_pretrained(d3.str()); });
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
}

TEST(ModelLoad, ShardedAndHalfPrecisionCheckpoints) {
  Llama ref = load_pretrained(kHf);
  at::Tensor want = logits(ref, sample_ids());
  TempDir d;
  SafeTensorsFile src(kHf + "/model.safetensors");
  NamedTensorList a, b;
  nlohmann::json map;
  for (const auto& [name, e] : src.entries()) {
    bool first = name.find("layers.0.") != std::string::npos || name.find("layers.1.") != std::string::npos ||
                 name.find("embed") != std::string::npos;
    (first ? a : b).emplace_back(name, src.load(name));
    map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors((d.path / "model-00001-of-00002.safetensors").string(), a);
  write_safetensors((d.path / "model-00002-of-00002.safetensors").string(), b);
  write(d.path / "model.safetensors.index.json", nlohmann::json({{"metadata", {}}, {"weight_map", map}}).dump());
  fs::copy_file(fs::path(kHf) / "config.json", d.path / "config.json");
  Llama sharded = load_pretrained(d.str());
  EXPECT_TRUE(at::equal(logits(sharded, sample_ids()), want));

  // A bf16 checkpoint loads into float32 parameters (exactly the bf16 values) and into bf16 ones.
  TempDir h;
  NamedTensorList half;
  for (const auto& [name, e] : src.entries()) half.emplace_back(name, src.load(name).to(at::kBFloat16));
  write_safetensors((h.path / "model.safetensors").string(), half);
  fs::copy_file(fs::path(kHf) / "config.json", h.path / "config.json");
  Llama f32 = load_pretrained(h.str(), at::kFloat);
  EXPECT_TRUE(at::equal(f32->model->embed_tokens->weight, src.load("model.embed_tokens.weight").to(at::kBFloat16).to(at::kFloat)));
  EXPECT_LT((logits(f32, sample_ids()) - want).abs().max().item<double>(), 0.5);
  Llama b16 = load_pretrained(h.str(), at::kBFloat16);
  EXPECT_EQ(b16->dtype(), at::kBFloat16);
  EXPECT_LT((logits(b16, sample_ids()).to(at::kFloat) - want).abs().max().item<double>(), 1.0);
}

TEST(ModelExport, AdapterRoundTripIsBitExact) {
  Llama m = load_pretrained(kHf);
  kiln::LoraConfig lc;
  lc.r = 4;
  lc.alpha = 8;
  lc.target_modules = {"q_proj", "v_proj", "down_proj"};
  lc.extra_trainable = {"embed_tokens"};
  apply_lora(m, lc, {});
  {
    at::NoGradGuard ng;
    for (auto& [n, p] : trainable_parameters(m)) p.add_(at::randn_like(p) * 0.05);
  }
  at::Tensor head = at::randn({3, 64});
  TempDir d;
  AdapterExport ex;
  ex.task_type = "TOKEN_CLS";
  ex.extra = {{"score.weight", head}};
  export_adapter(m, d.str(), ex);

  auto cfg = nlohmann::json::parse(read(d.path / "adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 8.0);
  EXPECT_EQ(cfg["task_type"], "TOKEN_CLS");
  EXPECT_EQ(cfg["target_modules"].size(), 3u);
  EXPECT_EQ(cfg["modules_to_save"].size(), 2u);  // embed_tokens, score
  SafeTensorsFile st((d.path / "adapter_model.safetensors").string());
  EXPECT_TRUE(st.has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_TRUE(st.has("base_model.model.model.layers.4.mlp.down_proj.lora_B.weight"));
  EXPECT_TRUE(st.has("base_model.model.model.embed_tokens.weight"));
  EXPECT_TRUE(st.has("base_model.model.score.weight"));
  EXPECT_EQ(st.entries().size(), size_t(5 * 3 * 2 + 2));

  Llama back = load_pretrained(kHf);
  auto loaded = load_adapter(back, d.str());
  ASSERT_EQ(loaded.extra.size(), 1u);
  EXPECT_EQ(loaded.extra[0].first, "score.weight");
  EXPECT_TRUE(at::equal(loaded.extra[0].second, head));
  EXPECT_EQ(loaded.task_type, "TOKEN_CLS");
  auto pa = m->named_parameters(), pb = back->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (auto& p : pa) EXPECT_TRUE(at::equal(p.value(), pb[p.key()])) << p.key();
  EXPECT_TRUE(at::equal(logits(m, sample_ids()), logits(back, sample_ids())));
  EXPECT_TRUE(back->named_parameters()["model.embed_tokens.weight"].requires_grad());

  // A second adapter on the same model is refused; a corrupt config names its field.
  EXPECT_THROW(load_adapter(back, d.str()), kiln::InputError);
  auto c2 = cfg;
  c2["r"] = "four";
  write(d.path / "adapter_config.json", c2.dump());
  Llama fresh = load_pretrained(kHf);
  std::string e = error_of([&] { load_adapter(fresh, d.str()); });
  EXPECT_NE(e.find("`r`"), std::string::npos) << e;
}

// LEP's calibration adapts the first and last decoder layers only: lora.layers [0, -1] (PEFT's
// layers_to_transform, negative from the end) wraps those, exports their indices, and loads back.
TEST(ModelExport, AdapterOfChosenLayers) {
  Llama m = load_pretrained(kHf);
  kiln::LoraConfig lc;
  lc.r = 2;
  lc.target_modules = {"q_proj", "down_proj"};
  lc.layers = {0, -1};
  const auto wrapped = apply_lora(m, lc, {});
  EXPECT_EQ(wrapped, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                               "model.layers.4.self_attn.q_proj", "model.layers.4.mlp.down_proj"}));
  {
    at::NoGradGuard ng;
    for (auto& [n, p] : lora_parameters(m)) p.add_(at::randn_like(p) * 0.05);
  }
  TempDir d;
  export_adapter(m, d.str());
  auto cfg = nlohmann::json::parse(read(d.path / "adapter_config.json"));
  EXPECT_EQ(cfg["layers_to_transform"], nlohmann::json::array({0, 4}));
  EXPECT_EQ(cfg["layers_pattern"], "layers");
  Llama back = load_pretrained(kHf);
  const auto loaded = load_adapter(back, d.str());
  EXPECT_EQ(loaded.lora.layers, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(lora_parameters(back).size(), 8u);
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(logits(back, sample_ids()), logits(m, sample_ids())));

  Llama other = load_pretrained(kHf);
  lc.layers = {5};
  EXPECT_NE(error_of([&] { apply_lora(other, lc, {}); }).find("key `lora.layers`: layer 5 outside this model's 5 decoder layers"),
            std::string::npos);
}

// model.freeze: full fine-tuning with chosen modules kept (LEP's instruct model keeps the base's
// embeddings). A tied head freezes with its embeddings; a name matching nothing, or freeze under
// LoRA, is an error naming the key.
TEST(ModelFreeze, FullFineTuningKeepsTheNamedModules) {
  Llama m = load_pretrained(kHf);  // stories260K ties E and H
  kiln::LoraConfig full;
  full.enabled = false;
  EXPECT_TRUE(apply_lora(m, full, {"lm_head", "layers.2"}).empty());
  size_t frozen = 0, trained = 0;
  for (auto& p : m->named_parameters()) {
    const bool keep = p.key() == "model.embed_tokens.weight" || p.key().rfind("model.layers.2.", 0) == 0;
    EXPECT_EQ(p.value().requires_grad(), !keep) << p.key();
    (keep ? frozen : trained)++;
  }
  EXPECT_EQ(frozen, 1u + 9u);  // E, and layer 2's 7 projections and 2 norms
  EXPECT_GT(trained, 30u);
  const auto names = trainable_parameters(m);
  EXPECT_TRUE(std::none_of(names.begin(), names.end(), [](const auto& p) { return p.first == "model.embed_tokens.weight"; }));

  Llama other = load_pretrained(kHf);
  EXPECT_NE(error_of([&] { apply_lora(other, full, {"embeddings"}); }).find("key `model.freeze`: `embeddings` names no module"),
            std::string::npos);
  kiln::LoraConfig lora;
  EXPECT_NE(error_of([&] { apply_lora(other, lora, {"embed_tokens"}); }).find("key `model.freeze`: LoRA"), std::string::npos);
}

TEST(ModelExport, MergedRoundTripIsBitExact) {
  for (bool tied : {true, false}) {
    Llama m = load_pretrained(kHf);
    if (!tied) {
      // An untied variant of the real model: export it as a plain HF folder first.
      TempDir u;
      LlamaConfig c = m->config();
      c.tie_word_embeddings = false;
      Llama un(c);
      un->init_weights(0.05);
      TempDir base;
      export_merged(un, base.str());
      m = load_pretrained(base.str());
      EXPECT_TRUE(m->named_parameters().contains("lm_head.weight"));
    }
    kiln::LoraConfig lc;
    lc.target_modules = {"all-linear"};
    apply_lora(m, lc, {});
    {
      at::NoGradGuard ng;
      for (auto& [n, p] : lora_parameters(m))
        if (n.find("lora_B") != std::string::npos) p.normal_(0, 0.05);
    }
    at::Tensor unmerged = logits(m, sample_ids());
    TempDir d;
    export_merged(m, d.str());
    EXPECT_TRUE(fs::exists(d.path / "tokenizer.model") || !tied);
    Llama back = load_pretrained(d.str());
    EXPECT_FALSE(has_lora(back));
    merge_lora(m);
    EXPECT_TRUE(at::equal(logits(m, sample_ids()), logits(back, sample_ids()))) << "tied=" << tied;
    // Merging reorders float32 sums: relative to the logits' scale (~10 here), not absolute.
    double scale = unmerged.abs().max().item<double>();
    EXPECT_LT((logits(back, sample_ids()) - unmerged).abs().max().item<double>() / scale, 1e-5) << "tied=" << tied;
    auto cfg = LlamaConfig::from_file(d.str());
    EXPECT_EQ(cfg.tie_word_embeddings, tied);
    EXPECT_EQ(cfg.torch_dtype, "float32");
  }
}

TEST(Safetensors, RoundTripAllDtypesAndMetadata) {
  TempDir d;
  NamedTensorList ts = {{"a", at::randn({3, 5})},
                        {"b", at::randn({7}).to(at::kBFloat16)},
                        {"c", at::randn({2, 2, 2}).to(at::kHalf)},
                        {"d", at::arange(10, at::kLong)},
                        {"e", at::zeros({0, 4})}};
  const std::string f = (d.path / "x.safetensors").string();
  write_safetensors(f, ts, {{"format", "pt"}, {"note", "kiln"}});
  SafeTensorsFile st(f);
  EXPECT_EQ(st.metadata().at("note"), "kiln");
  for (const auto& [n, t] : ts) {
    EXPECT_TRUE(at::equal(st.load(n), t)) << n;
    EXPECT_EQ(st.entry(n).dtype, safetensors_dtype(t));
  }
  // Data section 8-byte aligned, as other readers expect.
  std::ifstream in(f, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  std::string e = error_of([&] { st.entry("zzz"); });
  EXPECT_NE(e.find("zzz"), std::string::npos);
  write(d.path / "bad.safetensors", "not a safetensors file at all");
  e = error_of([&] { SafeTensorsFile bad((d.path / "bad.safetensors").string()); });
  EXPECT_NE(e.find("bad.safetensors"), std::string::npos) << e;
}
