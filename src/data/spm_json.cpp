// A Hugging Face tokenizer.json for a SentencePiece model, so that the `tokenizers` library (and
// transformers without its own slow-to-fast conversion) gives sentencepiece's ids. The layout is
// the one transformers writes for LLaMA-2 (BPE with byte fallback, merges recovered from the piece
// scores), with what that conversion leaves out for a trained model: the normaliser's precompiled
// character map (nmt_nfkc) and SentencePiece's removal of extra whitespace. Everything the prefix
// and whitespace handling needs is done in the normaliser, as sentencepiece does it, because a
// Metaspace pre-tokenizer adds no word-start mark to text that already starts with a space.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "data/spm_model.h"
#include "data/vocab_edit.h"

namespace kiln::data {

namespace {

using json = nlohmann::json;

// Protocol-buffer wire format, just enough to read the messages above.
class Wire {
 public:
  Wire(const char* p, size_t n, const std::string& origin) : p_(p), end_(p + n), origin_(origin) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1);
      const auto b = uint8_t(*p_++);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    input_error("{}: not a SentencePiece model (a varint longer than 10 bytes)", origin_);
  }
  // Reads a tag; returns the field number and sets the wire type.
  uint32_t tag(int& wire_type) {
    const uint64_t t = varint();
    wire_type = int(t & 7);
    return uint32_t(t >> 3);
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    need(n);
    std::string_view s(p_, size_t(n));
    p_ += n;
    return s;
  }
  float fixed32() {
    need(4);
    float f;
    std::memcpy(&f, p_, 4);
    p_ += 4;
    return f;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); return;
      case 1: need(8); p_ += 8; return;
      case 2: bytes(); return;
      case 5: need(4); p_ += 4; return;
      default: input_error("{}: not a SentencePiece model (wire type {})", origin_, wire_type);
    }
  }

 private:
  void need(uint64_t n) {
    if (uint64_t(end_ - p_) < n) input_error("{}: not a SentencePiece model (truncated)", origin_);
  }
  const char* p_;
  const char* end_;
  const std::string& origin_;
};

std::string base64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    if (i + 2 < in.size()) v |= uint32_t(uint8_t(in[i + 2]));
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < in.size() ? k[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? k[v & 63] : '=';
  }
  return out;
}

// The pieces' UTF-8 characters, as byte offsets (merges split a piece between characters only).
std::vector<size_t> char_starts(const std::string& s) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < s.size(); ++i)
    if ((uint8_t(s[i]) & 0xC0) != 0x80) starts.push_back(i);
  return starts;
}

}  // namespace

SpmModel parse_sentencepiece(const std::string& proto, const std::string& origin) {
  SpmModel m;
  Wire w(proto.data(), proto.size(), origin);
  while (!w.done()) {
    int wt;
    const uint32_t field = w.tag(wt);
    if (wt != 2) {
      w.skip(wt);
      continue;
    }
    const std::string_view body = w.bytes();
    Wire sub(body.data(), body.size(), origin);
    if (field == 1) {
      SpmModel::Piece piece;
      while (!sub.done()) {
        int st;
        const uint32_t f = sub.tag(st);
        if (f == 1 && st == 2) piece.text = std::string(sub.bytes());
        else if (f == 2 && st == 5) piece.score = sub.fixed32();
        else if (f == 3 && st == 0) piece.type = int(sub.varint());
        else sub.skip(st);
      }
      m.pieces.push_back(std::move(piece));
    } else if (field == 2) {  // TrainerSpec
      while (!sub.done()) {
        int st;
        const uint32_t f = sub.tag(st);
        if (st == 2 && f >= 45 && f <= 48) {
          std::string piece(sub.bytes());
          (f == 45 ? m.unk_piece : f == 46 ? m.bos_piece : f == 47 ? m.eos_piece : m.pad_piece) = std::move(piece);
          continue;
        }
        if (st != 0) {
          sub.skip(st);
          continue;
        }
        const auto v = int64_t(sub.varint());  // int32 fields: negative values are 10-byte varints
        const auto i32 = int64_t(int32_t(uint32_t(uint64_t(v))));
        if (f == 3) m.model_type = int(v);
        else if (f == 24) m.treat_whitespace_as_suffix = v != 0;
        else if (f == 35) m.byte_fallback = v != 0;
        else if (f == 40) m.unk_id = i32;
        else if (f == 41) m.bos_id = i32;
        else if (f == 42) m.eos_id = i32;
        else if (f == 43) m.pad_id = i32;
      }
    } else if (field == 3) {  // NormalizerSpec
      while (!sub.done()) {
        int st;
        const uint32_t f = sub.tag(st);
        if (f == 1 && st == 2) m.normalizer_name = std::string(sub.bytes());
        else if (f == 2 && st == 2) m.charsmap = std::string(sub.bytes());
        else if (f == 3 && st == 0) m.add_dummy_prefix = sub.varint() != 0;
        else if (f == 4 && st == 0) m.remove_extra_whitespaces = sub.varint() != 0;
        else if (f == 5 && st == 0) m.escape_whitespaces = sub.varint() != 0;
        else sub.skip(st);
      }
    }
  }
  return m;
}

namespace {

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(v);
}
void put_tag(std::string& out, uint32_t field, int wire_type) { put_varint(out, (uint64_t(field) << 3) | uint64_t(wire_type)); }
// int32 fields: a negative value is the 10-byte varint of its sign extension, as protobuf writes it.
void put_int(std::string& out, uint32_t field, int64_t v) {
  put_tag(out, field, 0);
  put_varint(out, uint64_t(v));
}
void put_bytes(std::string& out, uint32_t field, const std::string& b) {
  put_tag(out, field, 2);
  put_varint(out, b.size());
  out += b;
}

}  // namespace

std::string serialize_sentencepiece(const SpmModel& m) {
  std::string out;
  for (const auto& p : m.pieces) {
    std::string piece;
    put_bytes(piece, 1, p.text);
    put_tag(piece, 2, 5);
    char f[4];
    std::memcpy(f, &p.score, 4);
    piece.append(f, 4);
    put_int(piece, 3, p.type);
    put_bytes(out, 1, piece);
  }
  std::string trainer;
  put_int(trainer, 3, m.model_type);
  put_int(trainer, 4, int64_t(m.pieces.size()));
  put_int(trainer, 24, m.treat_whitespace_as_suffix);
  put_int(trainer, 35, m.byte_fallback);
  put_int(trainer, 40, m.unk_id);
  put_int(trainer, 41, m.bos_id);
  put_int(trainer, 42, m.eos_id);
  put_int(trainer, 43, m.pad_id);
  put_bytes(trainer, 45, m.unk_piece);
  put_bytes(trainer, 46, m.bos_piece);
  put_bytes(trainer, 47, m.eos_piece);
  put_bytes(trainer, 48, m.pad_piece);
  put_bytes(out, 2, trainer);
  std::string norm;
  put_bytes(norm, 1, m.normalizer_name);
  if (!m.charsmap.empty()) put_bytes(norm, 2, m.charsmap);
  put_int(norm, 3, m.add_dummy_prefix);
  put_int(norm, 4, m.remove_extra_whitespaces);
  put_int(norm, 5, m.escape_whitespaces);
  put_bytes(out, 3, norm);
  return out;
}

std::string sentencepiece_tokenizer_json(const std::string& model_proto, const std::string& origin) {
  const SpmModel m = parse_sentencepiece(model_proto, origin);
  const int64_t n = int64_t(m.pieces.size());
  if (n == 0) input_error("{}: not a SentencePiece model (no pieces)", origin);
  if (m.model_type != 1 && m.model_type != 2)
    input_error("{}: a SentencePiece {} model has no tokenizer.json form (BPE and unigram only)", origin,
                m.model_type == 3 ? "word" : "char");
  if (m.treat_whitespace_as_suffix)
    input_error("{}: treat_whitespace_as_suffix is not supported in tokenizer.json form", origin);
  if (m.unk_id < 0 || m.unk_id >= n) input_error("{}: unk_id {} outside the {} pieces", origin, m.unk_id, n);
  const std::string mark = "\xE2\x96\x81";

  json model;
  if (m.model_type == 2) {
    // BPE: sentencepiece merges the adjacent pair whose result scores highest; as ranked merges,
    // every split of a normal piece into two normal pieces, ordered by the result's score
    // (stable: by the result's id, then the halves' ids), as transformers' converter orders them.
    std::unordered_map<std::string, int64_t> normal;
    json vocab = json::object();
    for (int64_t id = 0; id < n; ++id) {
      vocab[m.pieces[size_t(id)].text] = id;
      if (m.pieces[size_t(id)].type == 1) normal.emplace(m.pieces[size_t(id)].text, id);
    }
    struct Merge {
      float score;
      int64_t id, left, right;
    };
    std::vector<Merge> merges;
    for (int64_t id = 0; id < n; ++id) {
      const auto& p = m.pieces[size_t(id)];
      if (p.type != 1) continue;
      const size_t first = merges.size();
      for (size_t cut : char_starts(p.text)) {
        if (cut == 0) continue;
        auto l = normal.find(p.text.substr(0, cut)), r = normal.find(p.text.substr(cut));
        if (l != normal.end() && r != normal.end()) merges.push_back({p.score, id, l->second, r->second});
      }
      std::sort(merges.begin() + std::ptrdiff_t(first), merges.end(),
                [](const Merge& a, const Merge& b) { return std::tie(a.left, a.right) < std::tie(b.left, b.right); });
    }
    std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });
    json list = json::array();
    for (const Merge& mg : merges)
      list.push_back(json::array({m.pieces[size_t(mg.left)].text, m.pieces[size_t(mg.right)].text}));
    model = {{"type", "BPE"},          {"dropout", nullptr},
             {"unk_token", m.pieces[size_t(m.unk_id)].text},
             {"continuing_subword_prefix", nullptr},
             {"end_of_word_suffix", nullptr},
             {"fuse_unk", true},       {"byte_fallback", m.byte_fallback},
             {"ignore_merges", false}, {"vocab", std::move(vocab)},
             {"merges", std::move(list)}};
  } else {
    json vocab = json::array();
    for (const auto& p : m.pieces) vocab.push_back(json::array({p.text, p.score}));
    model = {{"type", "Unigram"}, {"unk_id", m.unk_id}, {"vocab", std::move(vocab)}, {"byte_fallback", m.byte_fallback}};
  }

  // Unknown and control pieces are special tokens; user-defined pieces are matched before the
  // model as sentencepiece does, but are text.
  json added = json::array();
  for (int64_t id = 0; id < n; ++id) {
    const int type = m.pieces[size_t(id)].type;
    if (type == 2 || type == 3 || type == 4)
      added.push_back({{"id", id},           {"content", m.pieces[size_t(id)].text},
                       {"single_word", false}, {"lstrip", false},
                       {"rstrip", false},      {"normalized", false},
                       {"special", type != 4}});
  }

  // sentencepiece's normaliser: the character map, then (remove_extra_whitespaces) no space at
  // either end and none twice, then the dummy prefix on non-empty text, then spaces as the mark.
  json norms = json::array();
  if (!m.charsmap.empty()) norms.push_back({{"type", "Precompiled"}, {"precompiled_charsmap", base64(m.charsmap)}});
  if (m.remove_extra_whitespaces) {
    norms.push_back({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}});
    norms.push_back({{"type", "Replace"}, {"pattern", {{"Regex", "\\A | \\z"}}}, {"content", ""}});
  }
  if (m.add_dummy_prefix) norms.push_back({{"type", "Prepend"}, {"prepend", mark}});
  if (m.escape_whitespaces) norms.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", mark}});

  json decoders = json::array();
  if (m.escape_whitespaces) decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", mark}}}, {"content", " "}});
  if (m.byte_fallback) decoders.push_back({{"type", "ByteFallback"}});
  decoders.push_back({{"type", "Fuse"}});
  if (m.add_dummy_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});

  // BOS before each sequence, as sentencepiece users (and kiln) add it.
  json post = nullptr;
  if (m.bos_id >= 0 && m.bos_id < n) {
    const std::string& bos = m.pieces[size_t(m.bos_id)].text;
    auto special = [&](int type_id) { return json{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
    auto seq = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    post = {{"type", "TemplateProcessing"},
            {"single", json::array({special(0), seq("A", 0)})},
            {"pair", json::array({special(0), seq("A", 0), special(1), seq("B", 1)})},
            {"special_tokens", {{bos, {{"id", bos}, {"ids", json::array({m.bos_id})}, {"tokens", json::array({bos})}}}}}};
  }

  json out = {{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", std::move(added)},
              {"normalizer", norms.empty() ? json(nullptr) : json{{"type", "Sequence"}, {"normalizers", std::move(norms)}}},
              {"pre_tokenizer", nullptr},
              {"post_processor", std::move(post)},
              {"decoder", {{"type", "Sequence"}, {"decoders", std::move(decoders)}}},
              {"model", std::move(model)}};
  return out.dump(-1, ' ', false, json::error_handler_t::strict) + "\n";
}

}  // namespace kiln::data
