// Hugging Face tokenizer.json, byte-level BPE (the `tokenizers` library's BPE model with the
// ByteLevel pre-tokenizer and decoder), as LLaMA-3 and GPT-2-style models ship it:
//   1. added tokens are matched first, leftmost-longest, and never split;
//   2. the rest is cut by the pre-tokenizer's regexes (PCRE2 with Unicode properties; `Split` with
//      behavior Isolated, `Digits` as \p{N} or \p{N}+, and ByteLevel's own GPT-2 regex when
//      use_regex is true), each applied in order to the pieces of the one before;
//   3. each piece's bytes are mapped to printable characters (GPT-2's bytes_to_unicode);
//   4. with ignore_merges a piece that is itself in the vocabulary is one token; otherwise the
//      piece's characters are merged pair by pair, lowest merge rank first, leftmost among equals
//      (the library's Word::merge_all).
// Decoding maps the characters back to bytes.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/files.h"
#include "data/tokenizer_impl.h"

namespace kiln::data {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for 256 + n.
struct ByteMap {
  std::string to_char[256];                       // UTF-8 of the character standing for the byte
  std::unordered_map<uint32_t, uint8_t> to_byte;  // code point -> byte
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n++);
      to_byte[cp] = uint8_t(b);
      std::string s;
      if (cp < 0x80) {
        s += char(cp);
      } else {
        s += char(0xC0 | (cp >> 6));
        s += char(0x80 | (cp & 0x3F));
      }
      to_char[b] = s;
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// Next code point of valid UTF-8 at s[i] (the tokenizer's own vocabulary strings); advances i.
uint32_t next_code_point(const std::string& s, size_t& i) {
  const auto c = uint8_t(s[i]);
  int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  uint32_t cp = n == 1 ? c : c & (0x3F >> (n - 1));
  for (int k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
  i += size_t(n);
  return cp;
}

size_t utf8_len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 1; }

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) : where_(where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    // UCP: \s, \w, \d and POSIX classes by Unicode properties, as the library's Oniguruma does.
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      input_error("{}: pre-tokenizer regex does not compile at offset {}: {}", where, off,
                  reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Isolated split: every match and every stretch between matches is a piece, in order.
  void split(std::string_view s, std::vector<std::string_view>& out) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0, last = 0;
    while (start <= s.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        pcre2_match_data_free(md);
        input_error("{}: pre-tokenizer regex failed on a text of {} bytes: {}", where_, s.size(),
                    reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // an empty match: step over one character
        start = b + (b < s.size() ? utf8_len(uint8_t(s[b])) : 1);
        continue;
      }
      if (b > last) out.push_back(s.substr(last, b - last));
      out.push_back(s.substr(b, e - b));
      last = start = e;
    }
    if (last < s.size()) out.push_back(s.substr(last));
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
  std::string where_;
};

// The ByteLevel pre-tokenizer's regex when use_regex is true (GPT-2's).
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class BpeTokenizer final : public Tokenizer::Impl {
 public:
  explicit BpeTokenizer(const std::string& path) : path_(path) {
    bytes_ = read_file(path);
    // A field of the wrong JSON type anywhere below is the file's fault, named as such.
    try {
      parse(path);
    } catch (const json::exception& e) {
      input_error("{}: not a tokenizer.json kiln can read: {}", path, e.what());
    }
  }

 private:
  void parse(const std::string& path) {
    json j = json::parse(bytes_, nullptr, false);
    if (j.is_discarded()) input_error("{}: not valid JSON", path);
    if (!j.is_object() || !j.contains("model")) input_error("{}: not a Hugging Face tokenizer.json (no `model` section)", path);
    const json& model = j.value("model", json::object());
    if (model.value("type", std::string()) != "BPE")
      input_error("{}: model.type is `{}`; kiln reads BPE tokenizer.json files (or a tokenizer.model)", path,
                  model.value("type", std::string("?")));
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      input_error("{}: a normalizer ({}) is not implemented; kiln reads byte-level BPE without one", path,
                  j["normalizer"].value("type", std::string("?")));
    read_pre_tokenizer(j.value("pre_tokenizer", json()));
    if (!byte_level_)
      input_error("{}: no ByteLevel pre-tokenizer: kiln reads byte-level BPE from tokenizer.json (for "
                  "SentencePiece-style files, give the model's tokenizer.model)",
                  path);
    ignore_merges_ = model.value("ignore_merges", false);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
      if (model.contains(key) && !model[key].is_null() && !(model[key].is_string() && model[key].get<std::string>().empty()))
        input_error("{}: model.{} is set, which kiln's BPE does not implement", path, key);
    if (model.value("byte_fallback", false))
      input_error("{}: model.byte_fallback is true: kiln reads byte-level BPE (for SentencePiece-style files, give "
                  "the model's tokenizer.model)",
                  path);

    const json& vocab = model.value("vocab", json::object());
    if (!vocab.is_object() || vocab.empty()) input_error("{}: model.vocab is missing or empty", path);
    const json& added = j.value("added_tokens", json::array());
    // Ids are dense in every real tokenizer; a bound keeps a damaged id from sizing the tables.
    const int64_t max_id = 2 * int64_t(vocab.size() + added.size()) + 1024;
    auto id_of = [&](const json& v, const std::string& tok) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > max_id)
        input_error("{}: token `{}` has id {}, which is not an id of a {}-entry vocabulary", path, tok, v.dump(),
                    vocab.size() + added.size());
      return int32_t(v.get<int64_t>());
    };
    for (auto& [tok, id] : vocab.items()) add_token(tok, id_of(id, tok), false);
    if (!added.is_array()) input_error("{}: added_tokens is not a list", path);
    for (auto& a : added) {
      const std::string content = a.value("content", std::string());
      if (content.empty()) input_error("{}: an added token without content", path);
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        if (a.value(flag, false))
          input_error("{}: added token `{}` sets {}, which kiln does not implement", path, content, flag);
      const int32_t id = id_of(a.value("id", json()), content);
      add_token(content, id, true);
      added_[content] = id;
      max_added_len_ = std::max(max_added_len_, content.size());
      added_first_[uint8_t(content[0])] = true;
    }

    const json& merges = model.value("merges", json::array());
    merges_.reserve(merges.size() * 2);
    int32_t rank = 0;
    for (auto& m : merges) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) input_error("{}: merge {} `{}` is not `left right`", path, rank, s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        input_error("{}: merge {} is neither `left right` nor [left, right]", path, rank);
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
        input_error("{}: merge {} (`{}` `{}`) uses a token missing from the vocabulary", path, rank, a, b);
      merges_.emplace(pair_key(ia->second, ib->second), std::make_pair(rank, iab->second));
      ++rank;
    }
    const ByteMap& bm = byte_map();
    for (int b = 0; b < 256; ++b) {
      auto it = vocab_.find(bm.to_char[b]);
      byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    }
    read_specials(fs::path(path).parent_path());
  }

 public:
  std::string kind() const override { return "bpe"; }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    size_t plain = 0, i = 0;
    while (i < text.size()) {
      size_t len = 0;
      int32_t id = match_added(text, i, len);
      if (id < 0) {
        ++i;
        continue;
      }
      encode_plain(text.substr(plain, i - plain), ids);
      ids.push_back(id);
      i += len;
      plain = i;
    }
    encode_plain(text.substr(plain), ids);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    const ByteMap& bm = byte_map();
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || id >= int32_t(tokens_.size())) continue;
      const std::string& t = tokens_[size_t(id)];
      if (special_[size_t(id)]) {
        out += t;
        continue;
      }
      // The library's ByteLevel decoder: a token whose characters all stand for bytes becomes those
      // bytes; any other token is kept as its own text.
      std::string bytes;
      bool mapped = true;
      for (size_t k = 0; k < t.size() && mapped;) {
        auto it = bm.to_byte.find(next_code_point(t, k));
        if (it == bm.to_byte.end())
          mapped = false;
        else
          bytes += char(it->second);
      }
      out += mapped ? bytes : t;
    }
    return out;
  }

  std::string piece(int32_t id) const override {
    return id >= 0 && id < int32_t(tokens_.size()) ? tokens_[size_t(id)] : std::string();
  }
  int32_t piece_to_id(const std::string& p) const override {
    auto it = vocab_.find(p);
    return it == vocab_.end() ? -1 : it->second;
  }
  int32_t vocab_size() const override { return int32_t(tokens_.size()); }
  int32_t unk_id() const override { return -1; }
  float score(int32_t) const override { return 0; }
  // A token that is one byte of a multi-byte character: what byte fallback is for SentencePiece.
  bool is_byte(int32_t id) const override {
    return id >= 0 && std::count(byte_id_ + 0x80, byte_id_ + 256, id) > 0;
  }
  bool is_special(int32_t id) const override { return id >= 0 && size_t(id) < special_.size() && special_[size_t(id)]; }
  std::string serialized() const override { return bytes_; }

 private:
  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  void add_token(const std::string& tok, int32_t id, bool special) {
    if (id < 0) input_error("{}: token `{}` has id {}", path_, tok, id);
    if (size_t(id) >= tokens_.size()) {
      tokens_.resize(size_t(id) + 1);
      special_.resize(size_t(id) + 1, false);
    }
    tokens_[size_t(id)] = tok;
    special_[size_t(id)] = special_[size_t(id)] || special;
    vocab_.emplace(tok, id);
  }

  void read_pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    const std::string type = p.value("type", std::string());
    if (type == "Sequence") {
      for (auto& q : p.value("pretokenizers", json::array())) read_pre_tokenizer(q);
    } else if (type == "Split") {
      const json& pat = p.value("pattern", json::object());
      std::string re;
      if (pat.contains("Regex"))
        re = pat["Regex"].get<std::string>();
      else if (pat.contains("String"))
        re = "\\Q" + pat["String"].get<std::string>() + "\\E";
      else
        input_error("{}: Split pre-tokenizer without a pattern", path_);
      if (p.value("behavior", std::string()) != "Isolated" || p.value("invert", false))
        input_error("{}: Split pre-tokenizer with behavior `{}`{}: kiln implements Isolated", path_,
                    p.value("behavior", std::string("?")), p.value("invert", false) ? " (inverted)" : "");
      splits_.push_back(std::make_unique<Regex>(re, path_));
    } else if (type == "Digits") {
      // The library's Digits: numeric characters (Rust's char::is_numeric, the general categories
      // Nd, Nl and No, which is \p{N}) split off, Isolated: each one alone with individual_digits
      // (SmolLM2, StarCoder: "123" is 1 2 3, "½" and "１" too), else runs of them.
      splits_.push_back(std::make_unique<Regex>(p.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", path_));
    } else if (type == "ByteLevel") {
      // The library prepends the space to every piece an earlier pre-tokenizer made; kiln prepends
      // it once, to the text, which is the same only when nothing split the text before.
      if (p.value("add_prefix_space", false) && !splits_.empty())
        input_error("{}: ByteLevel with add_prefix_space after another pre-tokenizer is not implemented", path_);
      byte_level_ = true;
      add_prefix_space_ = p.value("add_prefix_space", false);
      if (p.value("use_regex", true)) splits_.push_back(std::make_unique<Regex>(kGpt2Pattern, path_));
    } else {
      input_error("{}: pre-tokenizer `{}` is not implemented (kiln: Sequence, Split, Digits, ByteLevel)", path_, type);
    }
  }

  // bos/eos from tokenizer_config.json beside the file (a string or {"content": ...}).
  void read_specials(const fs::path& dir) {
    const fs::path cfg = dir / "tokenizer_config.json";
    if (!fs::exists(cfg)) return;
    json c = json::parse(read_file(cfg.string()), nullptr, false);
    if (c.is_discarded()) input_error("{}: not valid JSON", cfg.string());
    auto id_of = [&](const char* key) -> int32_t {
      if (!c.contains(key) || c[key].is_null()) return -1;
      const json& v = c[key];
      const std::string s = v.is_string() ? v.get<std::string>() : v.value("content", std::string());
      auto it = vocab_.find(s);
      if (it == vocab_.end()) input_error("{}: {} `{}` is not in the vocabulary", cfg.string(), key, s);
      return it->second;
    };
    bos = id_of("bos_token");
    eos = id_of("eos_token");
    pad = id_of("pad_token");
  }

  // The added token starting at text[i], longest first; -1 if none.
  int32_t match_added(std::string_view text, size_t i, size_t& len) const {
    if (!added_first_[uint8_t(text[i])]) return -1;
    const size_t max = std::min(max_added_len_, text.size() - i);
    for (size_t n = max; n > 0; --n) {
      auto it = added_.find(std::string(text.substr(i, n)));
      if (it != added_.end()) {
        len = n;
        return it->second;
      }
    }
    return -1;
  }

  void encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
    if (text.empty()) return;
    std::string prefixed;
    if (add_prefix_space_ && text[0] != ' ') {
      prefixed = " " + std::string(text);
      text = prefixed;
    }
    std::vector<std::string_view> pieces{text}, next;
    for (auto& re : splits_) {
      next.clear();
      for (auto p : pieces) re->split(p, next);
      pieces.swap(next);
    }
    for (auto p : pieces) encode_piece(p, ids);
  }

  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(std::string(piece));
      if (it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> out = bpe(piece);
    ids.insert(ids.end(), out.begin(), out.end());
    if (piece.size() <= 256) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (cache_.size() > 200000) cache_.clear();
      cache_.emplace(std::string(piece), std::move(out));
    }
  }

  std::vector<int32_t> bpe(std::string_view piece) const {
    const ByteMap& bm = byte_map();
    if (ignore_merges_) {
      std::string mapped;
      for (char ch : piece) mapped += bm.to_char[uint8_t(ch)];
      auto it = vocab_.find(mapped);
      if (it != vocab_.end()) return {it->second};
    }
    struct Symbol {
      int32_t id;
      int32_t prev, next;
      bool alive;
    };
    std::vector<Symbol> sym;
    sym.reserve(piece.size());
    for (size_t k = 0; k < piece.size(); ++k) {
      const int32_t id = byte_id_[uint8_t(piece[k])];
      if (id < 0) input_error("{}: byte 0x{:02x} has no token (not a byte-level vocabulary?)", path_, uint8_t(piece[k]));
      sym.push_back({id, int32_t(k) - 1, k + 1 < piece.size() ? int32_t(k + 1) : -1, true});
    }
    struct Merge {
      int32_t rank, pos, new_id;
      bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Merge> queue;
    auto push = [&](int32_t pos) {
      if (pos < 0 || sym[size_t(pos)].next < 0) return;
      auto it = merges_.find(pair_key(sym[size_t(pos)].id, sym[size_t(sym[size_t(pos)].next)].id));
      if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
    };
    for (int32_t k = 0; k + 1 < int32_t(sym.size()); ++k) push(k);
    while (!queue.empty()) {
      const Merge m = queue.top();
      queue.pop();
      Symbol& left = sym[size_t(m.pos)];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = sym[size_t(left.next)];
      auto it = merges_.find(pair_key(left.id, right.id));
      if (it == merges_.end() || it->second.second != m.new_id) continue;  // a stale entry
      left.id = m.new_id;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) sym[size_t(right.next)].prev = m.pos;
      push(left.prev);
      push(m.pos);
    }
    std::vector<int32_t> out;
    for (auto& s : sym)
      if (s.alive) out.push_back(s.id);
    return out;
  }

  std::string path_, bytes_;
  std::vector<std::string> tokens_;
  std::vector<bool> special_;
  std::unordered_map<std::string, int32_t> vocab_, added_;
  size_t max_added_len_ = 0;
  bool added_first_[256] = {};  // first bytes of added tokens: other positions are not looked up
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) -> (rank, merged id)
  std::vector<std::unique_ptr<Regex>> splits_;
  int32_t byte_id_[256];
  bool byte_level_ = false, add_prefix_space_ = false, ignore_merges_ = false;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace

std::unique_ptr<Tokenizer::Impl> load_bpe_json(const std::string& path) { return std::make_unique<BpeTokenizer>(path); }

const std::string& byte_level_char(uint8_t b) { return byte_map().to_char[b]; }

}  // namespace kiln::data
