// What an ls_llama export tells transformers (methods/ls_llama/hf_code.h): which settings
// transformers' own class computes, the model code built into kiln (the repository's file, byte for
// byte), a merged export's config.json naming kiln's class, and the README's Python lines. The
// numbers themselves are checked against transformers by tests/model/hf_exports.sh.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "methods/ls_llama/hf_code.h"

using namespace kiln::methods::ls_llama;
using kiln::model::Pooling;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

HfSettings seq(Pooling p, bool bidirectional = false, bool pads = false) {
  return {false, p, bidirectional, pads, {"neg", "pos"}};
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("kiln-hf-code-" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST(HfCode, OnlyLastCausalMaskedSequencesUseTransformersOwnClass) {
  EXPECT_TRUE(stock_class(seq(Pooling::last)));
  EXPECT_EQ(class_name(seq(Pooling::last)), "LlamaForSequenceClassification");
  EXPECT_FALSE(stock_class(seq(Pooling::mean)));
  EXPECT_FALSE(stock_class(seq(Pooling::max)));
  EXPECT_FALSE(stock_class(seq(Pooling::last, /*bidirectional=*/true)));
  EXPECT_FALSE(stock_class(seq(Pooling::last, false, /*pads=*/true)));
  EXPECT_EQ(class_name(seq(Pooling::mean)), "KilnLlamaForSequenceClassification");
  // transformers' LlamaForTokenClassification names its head `score`, kiln's is `classifier`.
  HfSettings tok{true, Pooling::last, false, false, {"O", "B-PER"}};
  EXPECT_FALSE(stock_class(tok));
  EXPECT_EQ(class_name(tok), "KilnLlamaForTokenClassification");
}

TEST(HfCode, BuiltInModelCodeIsTheRepositoryFile) {
  EXPECT_EQ(std::string(modeling_source()),
            slurp(fs::path(KILN_SOURCE_DIR) / "src/methods/ls_llama" / kModelingFile));
}

TEST(HfCode, MergedConfigNamesKilnsClassOnlyWhenNeeded) {
  TempDir d;
  const nlohmann::json plain = {{"model_type", "llama"}, {"architectures", {"LlamaForSequenceClassification"}},
                                {"num_labels", 2}, {"hidden_size", 64}};
  auto write_config = [&] { std::ofstream(d.path / "config.json") << plain.dump(); };

  write_config();
  configure_merged(d.path.string(), seq(Pooling::last));
  EXPECT_EQ(nlohmann::json::parse(slurp(d.path / "config.json")), plain);
  EXPECT_FALSE(fs::exists(d.path / kModelingFile));

  write_config();
  configure_merged(d.path.string(), seq(Pooling::max, true, true));
  auto j = nlohmann::json::parse(slurp(d.path / "config.json"));
  EXPECT_EQ(j["model_type"], "kiln_llama");  // transformers refuses it without trust_remote_code
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"KilnLlamaForSequenceClassification"}));
  EXPECT_EQ(j["auto_map"]["AutoConfig"], "modeling_kiln_llama.KilnLlamaConfig");
  EXPECT_EQ(j["auto_map"]["AutoModelForSequenceClassification"], "modeling_kiln_llama.KilnLlamaForSequenceClassification");
  EXPECT_EQ(j["kiln_pooling"], "max");
  EXPECT_EQ(j["kiln_attention"], "bidirectional");
  EXPECT_EQ(j["kiln_pads"], "attended");
  EXPECT_EQ(j["hidden_size"], 64);  // the rest as it was
  EXPECT_EQ(slurp(d.path / kModelingFile), modeling_source());
}

TEST(HfCode, PythonLinesLoadEachExportWithItsSettings) {
  const std::string adapter = python_load(seq(Pooling::mean), /*merged=*/false);
  EXPECT_NE(adapter.find("KilnLlamaForSequenceClassification.from_base(\n    base, id2label={0: \"neg\", 1: \"pos\"}, "
                         "kiln_pooling=\"mean\", kiln_attention=\"causal\", kiln_pads=\"masked\")"),
            std::string::npos)
      << adapter;
  EXPECT_NE(adapter.find("PeftModel.from_pretrained(model, folder)"), std::string::npos) << adapter;
  const std::string merged = python_load(seq(Pooling::mean), /*merged=*/true);
  EXPECT_NE(merged.find("AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)"),
            std::string::npos)
      << merged;
  const std::string stock = python_load(seq(Pooling::last), /*merged=*/true);
  EXPECT_NE(stock.find("LlamaForSequenceClassification.from_pretrained(folder)"), std::string::npos) << stock;
  EXPECT_EQ(stock.find("trust_remote_code"), std::string::npos) << stock;
  EXPECT_NE(python_example(seq(Pooling::max, true, true), 2).find("pads each batch on the right with id 2"),
            std::string::npos);
}
