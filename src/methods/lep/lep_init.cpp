#include "methods/lep/lep_init.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "model/safetensors.h"

namespace kiln::lep {

namespace fs = std::filesystem;
using json = nlohmann::json;

at::Tensor init_rows(const at::Tensor& old_rows, const data::Tokenizer& old_tok, const data::Tokenizer& new_tok,
                     InitCounts* counts) {
  const at::Tensor E = old_rows.to(at::kFloat);
  const int64_t n_old = E.size(0), n_new = new_tok.vocab_size();
  at::Tensor mean_all = E.mean(0);
  at::Tensor out = at::empty({n_new, E.size(1)}, E.options());
  InitCounts c;
  for (int64_t id = 0; id < n_new; ++id) {
    const int32_t i = int32_t(id);
    if (new_tok.is_special(i)) {
      const int32_t o = old_tok.piece_to_id(new_tok.piece(i));
      if (o >= 0 && o < n_old && old_tok.piece(o) == new_tok.piece(i)) {
        out[id].copy_(E[o]);
        ++c.specials_copied;
      } else {
        out[id].copy_(mean_all);
        ++c.no_pieces;
      }
      continue;
    }
    std::vector<int32_t> pieces = old_tok.encode(new_tok.decode({i}), /*add_bos=*/false);
    std::vector<int64_t> rows;
    for (int32_t p : pieces)
      if (p >= 0 && p < n_old) rows.push_back(p);
    if (rows.empty()) {
      out[id].copy_(mean_all);
      ++c.no_pieces;
    } else {
      out[id].copy_(E.index_select(0, at::tensor(rows, at::kLong)).mean(0));
      ++c.averaged;
    }
  }
  if (counts) *counts = c;
  return out;
}

namespace {

std::map<std::string, std::string> metadata_of(const model::SafeTensorsFile& f) {
  auto m = f.metadata();
  if (m.empty()) m["format"] = "pt";
  return m;
}

}  // namespace

InitCounts init_model(const std::string& model_dir, const std::string& new_tokenizer, const std::string& out_dir) {
  const fs::path in(model_dir), out(out_dir);
  const fs::path config_path = in / "config.json";
  json config = json::parse(read_file(config_path.string()), nullptr, false);
  if (config.is_discarded()) input_error("{}: not valid JSON", config_path.string());
  data::Tokenizer old_tok(model_dir), new_tok(new_tokenizer);

  // Which files hold the weights, and which of them hold E (and H).
  std::vector<std::string> files;
  json index;
  const fs::path index_path = in / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    index = json::parse(read_file(index_path.string()));
    std::set<std::string> seen;
    for (auto& [name, file] : index["weight_map"].items())
      if (seen.insert(file.get<std::string>()).second) files.push_back(file.get<std::string>());
  } else if (fs::exists(in / "model.safetensors")) {
    files.push_back("model.safetensors");
  } else {
    input_error("{}: no model.safetensors or model.safetensors.index.json", model_dir);
  }
  std::string e_file, h_file;
  for (auto& f : files) {
    model::SafeTensorsFile st((in / f).string());
    if (st.has("model.embed_tokens.weight")) e_file = f;
    if (st.has("lm_head.weight")) h_file = f;
  }
  if (e_file.empty()) input_error("{}: no model.embed_tokens.weight in its weights", model_dir);
  const bool tied = h_file.empty();
  if (tied) h_file = e_file;  // the new, untied head goes beside E

  InitCounts counts;
  fs::create_directories(out);
  for (auto& f : files) {
    const fs::path src = in / f, dst = out / f;
    if (f != e_file && f != h_file) {
      fs::copy_file(src, dst);
      continue;
    }
    model::SafeTensorsFile st(src.string());
    model::NamedTensorList tensors;
    for (auto& [name, entry] : st.entries()) {
      at::Tensor t = st.view(name);
      if (name == "model.embed_tokens.weight") {
        t = init_rows(t, old_tok, new_tok, &counts).to(t.scalar_type());
        log::info("E: {} rows: {} specials copied, {} averaged over their old pieces, {} the mean of all rows",
                  t.size(0), counts.specials_copied, counts.averaged, counts.no_pieces);
        if (tied && f == h_file) {
          // The old head is E: the new one is averaged from it, then trained on its own.
          tensors.emplace_back("lm_head.weight", t.clone());
        }
      } else if (name == "lm_head.weight") {
        t = init_rows(t, old_tok, new_tok).to(t.scalar_type());
      }
      tensors.emplace_back(name, t);
    }
    model::write_safetensors(dst.string(), tensors, metadata_of(st));
  }
  if (!index.is_null()) {
    if (tied) index["weight_map"]["lm_head.weight"] = h_file;
    write_file_atomic((out / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  }
  config["vocab_size"] = new_tok.vocab_size();
  config["tie_word_embeddings"] = false;
  // Special ids change only where the new vocabulary moved them (a shrunk one): then the config
  // names the new tokenizer's, and the old generation settings (which name ids) are not carried.
  const bool same_specials = new_tok.bos_id() == old_tok.bos_id() && new_tok.eos_id() == old_tok.eos_id();
  if (!same_specials) {
    config["bos_token_id"] = new_tok.bos_id();
    config["eos_token_id"] = new_tok.eos_id();
    config.erase("pad_token_id");
  } else if (fs::exists(in / "generation_config.json")) {
    fs::copy_file(in / "generation_config.json", out / "generation_config.json");
  }
  write_file_atomic((out / "config.json").string(), config.dump(2) + "\n");
  // The tokenizer file kiln loaded (only it: with both, kiln would prefer tokenizer.model) and its
  // configuration.
  const fs::path tok_file = new_tok.path(), tok_dir = tok_file.parent_path();
  fs::copy_file(tok_file, out / tok_file.filename());
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(tok_dir / f)) fs::copy_file(tok_dir / f, out / f);
  return counts;
}

}  // namespace kiln::lep
