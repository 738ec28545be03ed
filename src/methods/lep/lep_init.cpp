#include "methods/lep/lep_init.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "data/vocab_edit.h"
#include "model/safetensors.h"

namespace kiln::lep {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<int32_t> old_pieces_of(const data::Tokenizer& old_tok, const data::Tokenizer& new_tok, int32_t id) {
  if (new_tok.kind() != "sentencepiece" || new_tok.is_byte(id)) return old_tok.encode(new_tok.decode({id}), false);
  // The piece's own text, its word mark as a space: "▁при" is " при", and a word-internal "ени"
  // stays "ени" (decoding would drop a leading mark and encoding would add one, making it "▁ени").
  std::string text;
  const std::string piece = new_tok.piece(id), mark = "\xe2\x96\x81";  // U+2581
  for (size_t k = 0; k < piece.size();)
    if (piece.compare(k, mark.size(), mark) == 0) text += ' ', k += mark.size();
    else text += piece[k++];
  if (old_tok.kind() != "sentencepiece") return old_tok.encode(text, false);  // byte-level BPE: no dummy prefix
  // Encoded after "1" and the pieces of "1" dropped: a SentencePiece tokenizer's dummy prefix
  // goes to the "1", not to the piece (ruadapt's special_encode, reinit_embeddings_with_head_mistral).
  const size_t shift = old_tok.encode("1", false).size();
  std::vector<int32_t> ids = old_tok.encode("1" + text, false);
  ids.erase(ids.begin(), ids.begin() + int64_t(std::min(shift, ids.size())));
  return ids;
}

Averaging averaging(const data::Tokenizer& old_tok, const data::Tokenizer& new_tok, int64_t old_rows) {
  const int64_t n_new = new_tok.vocab_size();
  Averaging T;
  T.rows.resize(size_t(n_new));
  InitCounts& c = T.counts;
  const bool same_kind = old_tok.kind() == new_tok.kind();
  for (int64_t id = 0; id < n_new; ++id) {
    const int32_t i = int32_t(id);
    auto& row = T.rows[size_t(id)];
    if (new_tok.is_special(i)) {
      const int32_t o = old_tok.piece_to_id(new_tok.piece(i));
      if (o >= 0 && o < old_rows && old_tok.piece(o) == new_tok.piece(i)) {
        row.push_back(o);
        ++c.specials_copied;
      } else {
        ++c.no_pieces;
      }
      continue;
    }
    if (same_kind) {
      const std::string piece = new_tok.piece(i);
      const int32_t o = old_tok.piece_to_id(piece);
      if (o >= 0 && o < old_rows && old_tok.piece(o) == piece) {
        row.push_back(o);
        ++c.copied;
        continue;
      }
    }
    for (int32_t p : old_pieces_of(old_tok, new_tok, i))
      if (p >= 0 && p < old_rows) row.push_back(p);
    ++(row.empty() ? c.no_pieces : c.averaged);
  }
  return T;
}

at::Tensor average_rows(const Averaging& T, const at::Tensor& M, const at::Tensor& mean_all, int64_t begin, int64_t end) {
  at::Tensor out = at::empty({end - begin, M.size(1)}, M.options());
  for (int64_t id = begin; id < end; ++id) {
    const auto& row = T.rows[size_t(id)];
    if (row.empty())
      out[id - begin].copy_(mean_all);
    else if (row.size() == 1)
      out[id - begin].copy_(M[row[0]]);
    else
      out[id - begin].copy_(M.index_select(0, at::tensor(row, at::kLong)).mean(0));
  }
  return out;
}

at::Tensor init_rows(const at::Tensor& old_rows, const data::Tokenizer& old_tok, const data::Tokenizer& new_tok,
                     InitCounts* counts) {
  const at::Tensor E = old_rows.to(at::kFloat);
  const Averaging T = averaging(old_tok, new_tok, E.size(0));
  if (counts) *counts = T.counts;
  return average_rows(T, E, E.mean(0), 0, int64_t(T.rows.size()));
}

namespace {

std::map<std::string, std::string> metadata_of(const model::SafeTensorsFile& f) {
  auto m = f.metadata();
  if (m.empty()) m["format"] = "pt";
  return m;
}

at::Tensor load_named(const std::string& file, const std::string& name) {
  return model::SafeTensorsFile(file).load(name);
}

}  // namespace

ModelFiles model_files(const std::string& model_dir) {
  const fs::path in(model_dir);
  ModelFiles m;
  m.dir = model_dir;
  const fs::path index_path = in / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    m.index_json = read_file(index_path.string());
    json index = json::parse(m.index_json, nullptr, false);
    if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object())
      input_error("{}: not a safetensors index (no `weight_map` object)", index_path.string());
    std::set<std::string> seen;
    for (auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) input_error("{}: weight_map[{}] is not a file name", index_path.string(), name);
      if (seen.insert(file.get<std::string>()).second) m.files.push_back(file.get<std::string>());
    }
  } else if (fs::exists(in / "model.safetensors")) {
    m.files.push_back("model.safetensors");
  } else {
    input_error("{}: no model.safetensors or model.safetensors.index.json", model_dir);
  }
  for (auto& f : m.files) {
    model::SafeTensorsFile st((in / f).string());
    if (st.has("model.embed_tokens.weight")) m.e_file = f;
    if (st.has("lm_head.weight")) m.h_file = f;
  }
  if (m.e_file.empty()) input_error("{}: no model.embed_tokens.weight in its weights", model_dir);
  m.tied = m.h_file.empty();
  if (m.tied) m.h_file = m.e_file;  // an untied head is written beside E
  return m;
}

at::Tensor ModelFiles::E() const { return load_named((fs::path(dir) / e_file).string(), "model.embed_tokens.weight"); }
at::Tensor ModelFiles::H() const {
  return tied ? E() : load_named((fs::path(dir) / h_file).string(), "lm_head.weight");
}

void write_model(const ModelFiles& in, const at::Tensor& E, const at::Tensor& H, const data::Tokenizer& old_tok,
                 const data::Tokenizer& new_tok, const std::string& out_dir) {
  const fs::path src_dir(in.dir), out(out_dir);
  for (auto& f : in.files) {
    const fs::path src = src_dir / f, dst = out / f;
    if (f != in.e_file && f != in.h_file) {
      fs::copy_file(src, dst);
      continue;
    }
    model::SafeTensorsFile st(src.string());
    model::NamedTensorList tensors;
    for (auto& [name, entry] : st.entries()) {
      at::Tensor t = st.view(name);
      if (name == "model.embed_tokens.weight") {
        tensors.emplace_back(name, E.to(t.scalar_type()));
        if (in.tied) tensors.emplace_back("lm_head.weight", H.to(t.scalar_type()));
      } else if (name == "lm_head.weight") {
        tensors.emplace_back(name, H.to(t.scalar_type()));
      } else {
        tensors.emplace_back(name, t);
      }
    }
    model::write_safetensors(dst.string(), tensors, metadata_of(st));
  }
  if (!in.index_json.empty()) {
    json index = json::parse(in.index_json);
    if (in.tied) index["weight_map"]["lm_head.weight"] = in.h_file;
    write_file_atomic((out / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  }
  const fs::path config_path = src_dir / "config.json";
  json config = json::parse(read_file(config_path.string()), nullptr, false);
  if (config.is_discarded() || !config.is_object()) input_error("{}: not a JSON object", config_path.string());
  config["vocab_size"] = E.size(0);
  config["tie_word_embeddings"] = false;
  // Special ids change only where the new vocabulary moved them (a shrunk one): then the config
  // names the new tokenizer's, and the old generation settings (which name ids) are not carried.
  const bool same_specials = new_tok.bos_id() == old_tok.bos_id() && new_tok.eos_id() == old_tok.eos_id();
  if (!same_specials) {
    config["bos_token_id"] = new_tok.bos_id();
    config["eos_token_id"] = new_tok.eos_id();
    config.erase("pad_token_id");
  } else if (fs::exists(src_dir / "generation_config.json")) {
    fs::copy_file(src_dir / "generation_config.json", out / "generation_config.json");
  }
  write_file_atomic((out / "config.json").string(), config.dump(2) + "\n");
  // The tokenizer file kiln loaded (only it: with both, kiln would prefer tokenizer.model; a
  // tokenizer.model gets its tokenizer.json form made from it, not a copy that may be stale) and
  // its configuration.
  const fs::path tok_file = new_tok.path(), tok_dir = tok_file.parent_path();
  fs::copy_file(tok_file, out / tok_file.filename());
  if (new_tok.kind() == "sentencepiece")
    write_file_atomic((out / "tokenizer.json").string(),
                      data::sentencepiece_tokenizer_json(new_tok.serialized(), tok_file.string()));
  if (fs::exists(tok_dir / "tokenizer_config.json"))
    write_file_atomic((out / "tokenizer_config.json").string(),
                      data::adapt_tokenizer_config(read_file((tok_dir / "tokenizer_config.json").string()), new_tok));
  if (fs::exists(tok_dir / "special_tokens_map.json"))
    fs::copy_file(tok_dir / "special_tokens_map.json", out / "special_tokens_map.json");
}

InitCounts init_model(const std::string& model_dir, const std::string& new_tokenizer, const std::string& out_dir) {
  data::Tokenizer old_tok(model_dir), new_tok(new_tokenizer);
  const ModelFiles in = model_files(model_dir);
  InitCounts counts;
  const at::Tensor E = init_rows(in.E(), old_tok, new_tok, &counts);
  log::info("E: {} rows: {} copied from the same old token, {} specials copied, {} averaged over their old pieces, {} "
            "the mean of all rows",
            E.size(0), counts.copied, counts.specials_copied, counts.averaged, counts.no_pieces);
  // A tied head is averaged from E (the same rows), then trained on its own.
  const at::Tensor H = in.tied ? E : init_rows(in.H(), old_tok, new_tok);
  fs::create_directories(out_dir);
  write_model(in, E, H, old_tok, new_tok, out_dir);
  return counts;
}

}  // namespace kiln::lep
