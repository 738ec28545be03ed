#include "data/vocab_edit.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <unordered_map>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "core/files.h"
#include "data/readers.h"
#include "data/tokenizer.h"
#include "data/tokenizer_impl.h"

namespace kiln::data {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kWordStart = "\xE2\x96\x81";  // U+2581, SentencePiece's word-start mark

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}

// The text a token of `t` stands for, as raw bytes ("" for a byte piece, which stands for no text).
std::string token_text(const Tokenizer& t, int32_t id) {
  if (t.kind() == "bpe") return t.decode({id});
  if (t.is_byte(id)) return "";
  return replace_all(t.piece(id), kWordStart, " ");
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = uint8_t(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

struct Script {
  const char* name;
  std::vector<std::pair<uint32_t, uint32_t>> ranges;  // letters' code points, inclusive
};

const std::vector<Script>& scripts() {
  static const std::vector<Script> all = {
      {"cyrillic", {{0x0400, 0x052F}, {0x1C80, 0x1C8F}, {0x2DE0, 0x2DFF}, {0xA640, 0xA69F}}},
      {"latin", {{'A', 'Z'}, {'a', 'z'}, {0x00C0, 0x00D6}, {0x00D8, 0x00F6}, {0x00F8, 0x024F}, {0x1E00, 0x1EFF}}},
      {"greek", {{0x0370, 0x03FF}, {0x1F00, 0x1FFF}}},
      {"armenian", {{0x0531, 0x058F}}},
      {"hebrew", {{0x05D0, 0x05FF}}},
      {"arabic", {{0x0620, 0x06FF}, {0x0750, 0x077F}, {0x08A0, 0x08FF}}},
      {"devanagari", {{0x0900, 0x097F}}},
      {"thai", {{0x0E00, 0x0E7F}}},
      {"georgian", {{0x10A0, 0x10FF}}},
      {"hangul", {{0x1100, 0x11FF}, {0x3130, 0x318F}, {0xAC00, 0xD7AF}}},
      {"kana", {{0x3040, 0x30FF}}},
      {"han", {{0x3400, 0x4DBF}, {0x4E00, 0x9FFF}}},
  };
  return all;
}

// Whether valid UTF-8 text holds a code point of the script.
bool has_letter_of(const std::string& text, const Script& script) {
  for (uint32_t cp : code_points(text))
    for (const auto& [lo, hi] : script.ranges)
      if (cp >= lo && cp <= hi) return true;
  return false;
}

const Script* find_script(const std::string& name) {
  if (name.empty()) return nullptr;
  std::string names;
  for (const auto& s : scripts()) {
    if (name == s.name) return &s;
    names += (names.empty() ? "" : ", ") + std::string(s.name);
  }
  input_error("--script {}: unknown (one of {})", name, names);
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(v);
}

// One ModelProto.pieces entry: SentencePiece { piece = 1; score = 2; type = 3 }.
std::string piece_message(const std::string& piece, float score, int type) {
  std::string m;
  m += char(0x0A);
  put_varint(m, piece.size());
  m += piece;
  m += char(0x15);
  char f[4];
  std::memcpy(f, &score, 4);
  m.append(f, 4);
  m += char(0x18);
  put_varint(m, uint64_t(type));
  std::string field;
  field += char(0x0A);
  put_varint(field, m.size());
  return field + m;
}

ExtendSummary extend_sentencepiece(const Tokenizer& base, const Tokenizer& add, const std::string& out_dir,
                                   const Script* script) {
  ExtendSummary s;
  s.old_size = base.vocab_size();
  float min_score = 0;
  bool base_has_bytes = false;
  for (int32_t id = 0; id < base.vocab_size(); ++id) {
    if (!base.is_special(id) && !base.is_byte(id)) min_score = std::min(min_score, base.score(id));
    base_has_bytes = base_has_bytes || base.is_byte(id);
  }
  std::string proto = base.serialized();
  std::unordered_set<std::string> seen;
  float score = min_score;
  for (int32_t id = 0; id < add.vocab_size(); ++id) {
    if (add.is_special(id)) continue;
    std::string text = token_text(add, id);
    if (text.empty()) {
      if (!base_has_bytes) ++s.skipped_bytes;
      continue;
    }
    if (!valid_utf8(text)) continue;  // a byte-level token inside a character: not a piece's text
    if (script && !has_letter_of(text, *script)) {
      ++s.filtered;
      continue;
    }
    const std::string piece = replace_all(text, " ", kWordStart);
    if (base.piece_to_id(piece) != base.unk_id() || piece == base.piece(base.unk_id()) || !seen.insert(piece).second)
      continue;
    // Strictly below the previous one: sentencepiece breaks ties by position, not by this order, and
    // near a base's -1e9 whitespace pieces (LLaMA-2's) float32 cannot tell score - 1 from score.
    score = std::min(score - 1, std::nextafter(score, -std::numeric_limits<float>::infinity()));
    proto += piece_message(piece, score, 1);
    ++s.added;
  }
  s.new_size = s.old_size + s.added;
  s.file = (fs::path(out_dir) / "tokenizer.model").string();
  write_file_atomic(s.file, proto);
  write_file_atomic((fs::path(out_dir) / "tokenizer.json").string(), sentencepiece_tokenizer_json(proto, s.file));
  return s;
}

ExtendSummary extend_byte_level(const Tokenizer& base, const Tokenizer& add, const std::string& out_dir,
                                const Script* script) {
  ExtendSummary s;
  s.old_size = base.vocab_size();
  json j = json::parse(base.serialized());
  json& vocab = j["model"]["vocab"];
  json& merges = j["model"]["merges"];
  std::unordered_set<std::string> have;
  for (auto& [tok, id] : vocab.items()) have.insert(tok);
  // Added tokens go into the model's vocabulary too, at their ids: the `tokenizers` library ignores
  // an added token's stored id when the model lacks it and numbers it after the model's vocabulary,
  // which now holds the new tokens.
  if (j.contains("added_tokens"))
    for (auto& a : j["added_tokens"]) {
      const std::string content = a.value("content", std::string());
      if (have.insert(content).second) vocab[content] = a.value("id", -1);
    }
  std::vector<std::string> added;
  int32_t next = base.vocab_size();
  for (int32_t id = 0; id < add.vocab_size(); ++id) {
    if (add.is_special(id)) continue;
    const std::string text = token_text(add, id);
    if (text.empty()) continue;
    if (script && !(valid_utf8(text) && has_letter_of(text, *script))) {
      ++s.filtered;
      continue;
    }
    std::string bl;
    for (char c : text) bl += byte_level_char(uint8_t(c));
    if (!have.insert(bl).second) continue;
    vocab[bl] = next++;
    added.push_back(bl);
  }
  // Every split of a new token into two tokens of the extended vocabulary, at character boundaries
  // of its byte-level form (one character per byte).
  const bool as_strings = merges.empty() || merges[0].is_string();
  for (const std::string& t : added) {
    for (size_t k = 1; k < t.size(); ++k) {
      if ((uint8_t(t[k]) & 0xC0) == 0x80) continue;
      const std::string a = t.substr(0, k), b = t.substr(k);
      if (!have.count(a) || !have.count(b)) continue;
      merges.push_back(as_strings ? json(a + " " + b) : json::array({a, b}));
      ++s.merges_added;
    }
  }
  s.added = int32_t(added.size());
  s.new_size = s.old_size + s.added;
  s.file = (fs::path(out_dir) / "tokenizer.json").string();
  write_file_atomic(s.file, j.dump(2) + "\n");
  return s;
}

}  // namespace

ShrinkSummary shrink_tokenizer(const Tokenizer& base, const std::vector<int64_t>& counts, int32_t keep,
                               const std::string& out_dir) {
  if (base.kind() != "bpe")
    input_error("{}: shrink keeps a byte-level BPE vocabulary consistent (tokenizer.json); a SentencePiece "
                "model is not implemented (LEP's Optimized tokenizer is LLaMA-3's)",
                base.path());
  ShrinkSummary s;
  s.old_size = base.vocab_size();
  json j = json::parse(base.serialized());
  json& model = j["model"];
  std::unordered_map<std::string, int32_t> old_id;
  for (auto& [tok, id] : model["vocab"].items()) old_id[tok] = id.get<int32_t>();
  std::vector<std::string> added;  // contents, in id order
  std::unordered_set<std::string> added_set;
  if (j.contains("added_tokens"))
    for (auto& a : j["added_tokens"]) {
      added.push_back(a.value("content", std::string()));
      added_set.insert(added.back());
    }
  // The merge that makes each token first (lowest rank): what BPE needs to build it.
  std::vector<std::pair<std::string, std::string>> merges;
  std::unordered_map<std::string, std::pair<std::string, std::string>> made_of;
  for (auto& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string t = m.get<std::string>();
      const size_t sp = t.find(' ', 1);
      a = t.substr(0, sp);
      b = t.substr(sp + 1);
    } else {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    }
    made_of.emplace(a + b, std::make_pair(a, b));
    merges.emplace_back(std::move(a), std::move(b));
  }
  std::unordered_set<std::string> kept;
  for (int b = 0; b < 256; ++b) kept.insert(byte_level_char(uint8_t(b)));
  // Candidates: model tokens by count, most frequent first.
  std::vector<std::pair<std::string, int32_t>> cand(old_id.begin(), old_id.end());
  auto count = [&](int32_t id) { return size_t(id) < counts.size() ? counts[size_t(id)] : 0; };
  std::sort(cand.begin(), cand.end(), [&](auto& x, auto& y) {
    return count(x.second) != count(y.second) ? count(x.second) > count(y.second) : x.second < y.second;
  });
  std::vector<std::string> closure;
  std::function<void(const std::string&)> need = [&](const std::string& t) {
    if (kept.count(t) || std::find(closure.begin(), closure.end(), t) != closure.end()) return;
    auto it = made_of.find(t);
    if (it != made_of.end()) {
      need(it->second.first);
      need(it->second.second);
    }
    closure.push_back(t);
  };
  for (auto& [tok, id] : cand) {
    if (int32_t(kept.size()) >= keep) break;
    if (added_set.count(tok)) continue;
    closure.clear();
    need(tok);
    if (int32_t(kept.size() + closure.size()) > keep) continue;  // a smaller one may still fit
    kept.insert(closure.begin(), closure.end());
  }
  std::vector<std::pair<int32_t, std::string>> order;
  for (auto& t : kept) order.emplace_back(old_id.count(t) ? old_id[t] : -1, t);
  std::sort(order.begin(), order.end());
  json vocab = json::object();
  int32_t next = 0;
  int64_t total = 0, covered = 0;
  for (int64_t c : counts) total += c;
  for (auto& [id, t] : order) {
    vocab[t] = next++;
    if (id >= 0) covered += count(id);
  }
  s.kept = next;
  std::unordered_map<std::string, int32_t> new_added;
  for (auto& a : added) {
    if (!vocab.contains(a)) vocab[a] = next++;  // in the model vocabulary too: see extend_byte_level
    new_added[a] = vocab[a].get<int32_t>();
  }
  s.new_size = next;
  json new_merges = json::array();
  const bool as_strings = model["merges"].empty() || model["merges"][0].is_string();
  for (auto& [a, b] : merges)
    if (kept.count(a) && kept.count(b) && kept.count(a + b)) {
      new_merges.push_back(as_strings ? json(a + " " + b) : json::array({a, b}));
      ++s.merges_kept;
    }
  model["vocab"] = std::move(vocab);
  model["merges"] = std::move(new_merges);
  if (j.contains("added_tokens"))
    for (auto& a : j["added_tokens"]) a["id"] = new_added[a.value("content", std::string())];
  // A TemplateProcessing post-processor names special tokens by id.
  if (j.contains("post_processor") && j["post_processor"].is_object()) {
    std::function<void(json&)> fix = [&](json& p) {
      if (p.contains("special_tokens"))
        for (auto& [name, st] : p["special_tokens"].items())
          for (size_t k = 0; k < st["tokens"].size(); ++k)
            st["ids"][k] = new_added.count(st["tokens"][k]) ? new_added[st["tokens"][k]] : st["ids"][k].get<int32_t>();
      if (p.contains("processors"))
        for (auto& q : p["processors"]) fix(q);
    };
    fix(j["post_processor"]);
  }
  s.corpus_share = total > 0 ? double(covered) / double(total) : 0;
  s.file = (fs::path(out_dir) / "tokenizer.json").string();
  write_file_atomic(s.file, j.dump(2) + "\n");
  return s;
}

std::string append_control_pieces(const std::string& model_proto, const std::vector<std::string>& pieces) {
  std::string proto = model_proto;
  for (const auto& p : pieces) proto += piece_message(p, 0.0f, 3);
  return proto;
}

std::map<int32_t, std::string> configured_added_tokens(const std::string& model_dir) {
  std::map<int32_t, std::string> out;
  const fs::path cfg = fs::path(model_dir) / "tokenizer_config.json";
  if (!fs::exists(cfg)) return out;
  json j;
  try {
    j = json::parse(read_file(cfg.string()));
  } catch (const json::exception& e) {
    input_error("{}: not JSON ({})", cfg.string(), e.what());
  }
  if (!j.is_object() || !j.contains("added_tokens_decoder") || !j["added_tokens_decoder"].is_object()) return out;
  for (const auto& [key, entry] : j["added_tokens_decoder"].items()) {
    if (!entry.is_object() || !entry.contains("content") || !entry["content"].is_string()) continue;
    char* end = nullptr;
    const long id = std::strtol(key.c_str(), &end, 10);
    if (key.empty() || *end != 0 || id < 0 || id > std::numeric_limits<int32_t>::max())
      input_error("{}: added_tokens_decoder key `{}` is not an id", cfg.string(), key);
    out.emplace(int32_t(id), entry["content"].get<std::string>());
  }
  return out;
}

std::string adapt_tokenizer_config(const std::string& config_json, const Tokenizer& tok) {
  json c = json::parse(config_json, nullptr, false);
  if (c.is_discarded() || !c.is_object()) return config_json;
  if (c.contains("added_tokens_decoder") && c["added_tokens_decoder"].is_object()) {
    json out = json::object();
    for (auto& [id, entry] : c["added_tokens_decoder"].items()) {
      // piece_to_id gives the unknown piece's id for an absent one: only the piece itself counts.
      const std::string content = entry.value("content", std::string());
      const int32_t now = tok.piece_to_id(content);
      out[std::to_string(now >= 0 && tok.piece(now) == content ? now : std::stoi(id))] = entry;
    }
    c["added_tokens_decoder"] = out;
  }
  if (tok.kind() == "sentencepiece") c["tokenizer_class"] = "PreTrainedTokenizerFast";
  return c.dump(2) + "\n";
}

ExtendSummary extend_tokenizer(const Tokenizer& base, const Tokenizer& add, const std::string& out_dir,
                               const std::string& script) {
  const Script* only = find_script(script);
  return base.kind() == "bpe" ? extend_byte_level(base, add, out_dir, only)
                              : extend_sentencepiece(base, add, out_dir, only);
}

}  // namespace kiln::data
