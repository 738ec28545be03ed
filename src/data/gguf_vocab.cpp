#include "data/gguf_vocab.h"

#include <algorithm>
#include <filesystem>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/files.h"
#include "core/gguf.h"
#include "data/spm_model.h"
#include "data/vocab_edit.h"

namespace kiln::data {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// llama.cpp's token types (llama.h `llama_token_type`), the same numbers as SentencePiece's.
enum TokenType : int64_t { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

// ---------------------------------------------------------------- pre-tokenizers by GGUF name
//
// What llama.cpp runs for a `tokenizer.ggml.pre` name (src/llama-vocab.cpp: the name -> type table in
// llama_vocab::impl::load, the regex list per type in llm_tokenizer_bpe, and its ignore_merges and
// add_bos defaults). Its regexes split in turn, each keeping matches and the stretches between them
// (Isolated), which is what a Sequence of Isolated Splits does; the byte-to-character mapping comes
// after. Where llama.cpp rewrote a Hugging Face regex (case-insensitive groups spelled out), the
// tokenizer.json gets llama.cpp's spelling, and export also accepts the original one.

const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
const char* kLlama3Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kLlama3RegexHf =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2RegexHf =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct PreRule {
  std::vector<std::string> names;  // the first is what export writes
  bool digits = false;             // Digits(individual_digits) first: every \p{N} alone
  std::vector<std::vector<std::string>> splits;  // Isolated Split regexes in order; each: spellings, llama.cpp's first
  bool byte_level_regex = false;   // ByteLevel's own GPT-2 regex (use_regex) last
  bool ignore_merges = false;      // a pre-token that is a whole token is not merged (llama.cpp's flag)
  bool add_bos = false;            // llama.cpp's default where the file has no add_bos_token
};

const std::vector<PreRule>& pre_rules() {
  static const std::vector<PreRule> rules = {
      // Digits one by one, then GPT-2's regex (SmolLM/SmolLM2, StarCoder and others: their
      // tokenizer.json is Digits(individual_digits) + ByteLevel(use_regex)).
      {{"smollm", "starcoder", "refact", "codeshell", "command-r"}, true, {}, true, false, false},
      // GPT-2's regex alone (tokenizer.json: ByteLevel with use_regex).
      {{"gpt-2", "phi-2", "mpt", "olmo"}, false, {}, true, false, false},
      // LLaMA-3's regex (numbers in runs of up to 3), whole-token pre-tokens kept, BOS added.
      {{"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       false, {{kLlama3Regex, kLlama3RegexHf}}, false, true, true},
      // The same regex with merges always applied (and so an older LLaMA-3 tokenizer.json without
      // ignore_merges).
      {{"smaug-bpe", "dbrx"}, false, {{kLlama3Regex, kLlama3RegexHf}}, false, false, false},
      // Qwen2's regex: LLaMA-3's with single digits.
      {{"qwen2", "deepseek-r1-qwen", "stablelm2"}, false, {{kQwen2Regex, kQwen2RegexHf}}, false, false, false},
      // llama.cpp's fallback for a name it is given as "default" (or none at all): four regexes in
      // turn, not GPT-2's alone.
      {{"default"},
       false,
       {{R"([\p{P}\$\+<=>\^~\|]+)"}, {kGpt2Regex}, {R"(\p{N}+)"}, {"[0-9][0-9][0-9]"}},
       false, false, false},
  };
  return rules;
}

const PreRule* find_rule(const std::string& name) {
  for (const auto& r : pre_rules())
    if (std::find(r.names.begin(), r.names.end(), name) != r.names.end()) return &r;
  return nullptr;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json pre_tokenizer_json(const PreRule& r) {
  json seq = json::array();
  if (r.digits) seq.push_back({{"type", "Digits"}, {"individual_digits", true}});
  for (const auto& s : r.splits)
    seq.push_back({{"type", "Split"}, {"pattern", {{"Regex", s.front()}}}, {"behavior", "Isolated"}, {"invert", false}});
  seq.push_back(byte_level(r.byte_level_regex));
  if (seq.size() == 1) return seq[0];
  return {{"type", "Sequence"}, {"pretokenizers", std::move(seq)}};
}

// A tokenizer.json pre-tokenizer as a list of steps ("digits:1", "split:<regex>", "bytelevel:1"),
// to compare with the table. Anything GGUF cannot name is an InputError here.
void pre_steps(const json& p, const std::string& where, std::vector<std::string>& out) {
  if (p.is_null()) input_error("{}: no pre-tokenizer; GGUF byte-level vocabularies need one (ByteLevel)", where);
  const std::string type = p.value("type", std::string());
  if (type == "Sequence") {
    for (const auto& q : p.value("pretokenizers", json::array())) pre_steps(q, where, out);
  } else if (type == "Digits") {
    out.push_back(p.value("individual_digits", false) ? "digits:1" : "digits:0");
  } else if (type == "Split") {
    const json& pat = p.value("pattern", json::object());
    if (!pat.contains("Regex") || p.value("behavior", std::string()) != "Isolated" || p.value("invert", false))
      input_error("{}: a Split pre-tokenizer that is not an Isolated regex has no GGUF pre-tokenizer name", where);
    out.push_back("split:" + pat["Regex"].get<std::string>());
  } else if (type == "ByteLevel") {
    if (p.value("add_prefix_space", false))
      input_error("{}: ByteLevel with add_prefix_space: llama.cpp adds no prefix space to byte-level BPE", where);
    out.push_back(p.value("use_regex", true) ? "bytelevel:1" : "bytelevel:0");
  } else {
    input_error("{}: pre-tokenizer `{}` has no GGUF pre-tokenizer name", where, type);
  }
}

bool rule_matches(const PreRule& r, const std::vector<std::string>& steps) {
  size_t k = 0;
  if (r.digits && (k >= steps.size() || steps[k++] != "digits:1")) return false;
  for (const auto& spellings : r.splits) {
    if (k >= steps.size()) return false;
    bool any = false;
    for (const auto& s : spellings) any = any || steps[k] == "split:" + s;
    if (!any) return false;
    ++k;
  }
  return k + 1 == steps.size() && steps[k] == (r.byte_level_regex ? "bytelevel:1" : "bytelevel:0");
}

// ---------------------------------------------------------------- GGUF -> tokenizer files

json template_processing(const std::string* bos, int64_t bos_id, const std::string* eos, int64_t eos_id) {
  auto special = [](const std::string& t, int type_id) { return json{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}}; };
  auto seq = [](const char* id, int type_id) { return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  json single = json::array(), pair = json::array(), specials = json::object();
  for (int part = 0; part < 2; ++part) {
    json& out = part == 0 ? single : pair;
    for (int s = 0; s < (part == 0 ? 1 : 2); ++s) {
      if (bos) out.push_back(special(*bos, s));
      out.push_back(seq(s == 0 ? "A" : "B", s));
      if (eos) out.push_back(special(*eos, s));
    }
  }
  if (bos) specials[*bos] = {{"id", *bos}, {"ids", {bos_id}}, {"tokens", {*bos}}};
  if (eos) specials[*eos] = {{"id", *eos}, {"ids", {eos_id}}, {"tokens", {*eos}}};
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false;
};

// ids from the file; `def` where the key is absent (llama.cpp's defaults per model type).
int64_t special_id(const gguf::File& f, const char* key, int64_t def, size_t n) {
  const int64_t id = f.integer_or(key, def);
  if (f.has(key) && (id < 0 || id >= int64_t(n)))
    input_error("{}: {} = {} is not an id of the {} tokens", f.path(), key, id, n);
  return id >= 0 && id < int64_t(n) ? id : -1;
}

GgufVocab read_vocab(const gguf::File& f, bool spm) {
  GgufVocab v;
  v.tokens = f.strings("tokenizer.ggml.tokens");
  const size_t n = v.tokens.size();
  if (n == 0) input_error("{}: tokenizer.ggml.tokens is empty", f.path());
  if (f.has("tokenizer.ggml.token_type")) {
    v.types = f.ints("tokenizer.ggml.token_type");
    if (v.types.size() != n)
      input_error("{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(), v.types.size(), n);
  } else {
    v.types.assign(n, NORMAL);
  }
  // llama.cpp's defaults: a SentencePiece vocabulary has <unk> <s> </s> at 0 1 2 and adds BOS.
  v.bos = special_id(f, "tokenizer.ggml.bos_token_id", spm ? 1 : -1, n);
  v.eos = special_id(f, "tokenizer.ggml.eos_token_id", spm ? 2 : -1, n);
  v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1, n);
  v.pad = special_id(f, "tokenizer.ggml.padding_token_id", -1, n);
  v.add_eos = f.flag_or("tokenizer.ggml.add_eos_token", false);
  return v;
}

void fill_config(HfTokenizerFiles& out, const gguf::File& f, const GgufVocab& v, int64_t model_max_length) {
  json cfg = json::object(), map = json::object();
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  cfg["add_bos_token"] = v.add_bos;
  cfg["add_eos_token"] = v.add_eos;
  const std::pair<const char*, int64_t> named[] = {{"bos_token", v.bos}, {"eos_token", v.eos}, {"unk_token", v.unk}, {"pad_token", v.pad}};
  for (const auto& [name, id] : named) {
    cfg[name] = id >= 0 ? json(v.tokens[size_t(id)]) : json(nullptr);
    if (id >= 0) map[name] = v.tokens[size_t(id)];
  }
  if (f.has("tokenizer.chat_template")) cfg["chat_template"] = f.str("tokenizer.chat_template");
  cfg["clean_up_tokenization_spaces"] = false;
  if (model_max_length > 0) cfg["model_max_length"] = model_max_length;
  json decoder = json::object();
  for (const auto& a : out.tokenizer_json.value("added_tokens", json::array()))
    decoder[std::to_string(a["id"].get<int64_t>())] = {{"content", a["content"]}, {"lstrip", false},
                                                       {"normalized", false},      {"rstrip", false},
                                                       {"single_word", false},     {"special", a["special"]}};
  cfg["added_tokens_decoder"] = std::move(decoder);
  out.tokenizer_config = std::move(cfg);
  out.special_tokens_map = std::move(map);
  out.bos_id = v.bos;
  out.eos_id = v.eos;
  out.pad_id = v.pad;
  out.unk_id = v.unk;
}

HfTokenizerFiles byte_level_from_gguf(const gguf::File& f, int64_t model_max_length) {
  HfTokenizerFiles out;
  // llama.cpp runs a file without the key as "default" (with a warning that quality suffers).
  const std::string pre = f.str_or("tokenizer.ggml.pre", "default");
  const PreRule* rule = find_rule(pre);
  if (!rule)
    input_error("{}: tokenizer.ggml.pre = \"{}\" is not supported (kiln knows: {})", f.path(), pre,
                join(gguf_pre_names(), ", "));
  GgufVocab v = read_vocab(f, false);
  v.add_bos = f.flag_or("tokenizer.ggml.add_bos_token", rule->add_bos);
  const size_t n = v.tokens.size();

  json vocab = json::object(), added = json::array();
  std::unordered_map<std::string, size_t> seen;
  for (size_t id = 0; id < n; ++id) {
    const std::string& t = v.tokens[id];
    const int64_t type = v.types[id];
    const bool is_added = type == CONTROL || type == UNKNOWN || type == USER_DEFINED;
    if (is_added) {
      if (t.empty()) input_error("{}: tokenizer.ggml.tokens[{}] is an empty added token", f.path(), id);
      added.push_back({{"id", id},           {"content", t},        {"single_word", false}, {"lstrip", false},
                       {"rstrip", false},    {"normalized", false}, {"special", type != USER_DEFINED}});
    }
    auto [it, fresh] = seen.emplace(t, id);
    if (!fresh) {
      // An added token is found by its own entry; a second model token of the same text is not.
      if (is_added) continue;
      input_error("{}: tokenizer.ggml.tokens[{}] and [{}] are both `{}`", f.path(), it->second, id, t);
    }
    vocab[t] = id;
  }

  if (!f.has("tokenizer.ggml.merges")) input_error("{}: tokenizer.ggml.merges is missing (a gpt2 vocabulary needs it)", f.path());
  const auto& gm = f.strings("tokenizer.ggml.merges");
  json merges = json::array();
  for (size_t i = 0; i < gm.size(); ++i) {
    // llama.cpp splits at the first space after the first byte.
    const size_t sp = gm[i].size() > 1 ? gm[i].find(' ', 1) : std::string::npos;
    if (sp == std::string::npos) input_error("{}: tokenizer.ggml.merges[{}] = \"{}\" is not `left right`", f.path(), i, gm[i]);
    std::string a = gm[i].substr(0, sp), b = gm[i].substr(sp + 1);
    if (!seen.count(a) || !seen.count(b) || !seen.count(a + b))
      input_error("{}: tokenizer.ggml.merges[{}] = \"{}\" uses a token missing from tokenizer.ggml.tokens", f.path(), i, gm[i]);
    merges.push_back({std::move(a), std::move(b)});
  }

  json post = (v.add_bos && v.bos >= 0) || (v.add_eos && v.eos >= 0)
                  ? template_processing(v.add_bos && v.bos >= 0 ? &v.tokens[size_t(v.bos)] : nullptr, v.bos,
                                        v.add_eos && v.eos >= 0 ? &v.tokens[size_t(v.eos)] : nullptr, v.eos)
                  : json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  out.tokenizer_json = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", std::move(added)},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer_json(*rule)},
      {"post_processor", std::move(post)},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", rule->ignore_merges},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}}};
  fill_config(out, f, v, model_max_length);
  return out;
}

HfTokenizerFiles sentencepiece_from_gguf(const gguf::File& f, int64_t model_max_length) {
  HfTokenizerFiles out;
  GgufVocab v = read_vocab(f, true);
  v.add_bos = f.flag_or("tokenizer.ggml.add_bos_token", true);
  const size_t n = v.tokens.size();
  std::vector<double> scores;
  if (f.has("tokenizer.ggml.scores")) {
    scores = f.floats("tokenizer.ggml.scores");
    if (scores.size() != n) input_error("{}: tokenizer.ggml.scores has {} entries for {} tokens", f.path(), scores.size(), n);
  } else {
    scores.assign(n, 0.0);
  }

  // llama.cpp's SentencePiece tokenizer: a space before the text (add_space_prefix, default on),
  // spaces as U+2581, then the adjacent pair whose merged piece scores highest is merged, again and
  // again; characters no piece covers become byte pieces. That is sentencepiece's BPE model with
  // the identity normaliser and no whitespace clean-up, which kiln runs through sentencepiece.
  SpmModel m;
  m.model_type = 2;
  m.normalizer_name = "identity";
  m.add_dummy_prefix = f.flag_or("tokenizer.ggml.add_space_prefix", true);
  m.remove_extra_whitespaces = false;
  m.escape_whitespaces = true;
  std::unordered_map<std::string, size_t> seen;
  bool has_unknown = false;
  for (size_t id = 0; id < n; ++id) {
    const int64_t type = v.types[id];
    if (type < NORMAL || type > BYTE)
      input_error("{}: tokenizer.ggml.token_type[{}] = {} is not a token type (1-6)", f.path(), id, type);
    if (v.tokens[id].empty()) input_error("{}: tokenizer.ggml.tokens[{}] is empty", f.path(), id);
    auto [it, fresh] = seen.emplace(v.tokens[id], id);
    if (!fresh) input_error("{}: tokenizer.ggml.tokens[{}] and [{}] are both `{}`", f.path(), it->second, id, v.tokens[id]);
    m.pieces.push_back({v.tokens[id], float(scores[id]), int(type)});
    m.byte_fallback = m.byte_fallback || type == BYTE;
    has_unknown = has_unknown || type == UNKNOWN;
  }
  // sentencepiece needs one unknown piece; files without types mark none.
  if (!has_unknown) {
    if (v.unk < 0) input_error("{}: no UNKNOWN token and no tokenizer.ggml.unknown_token_id", f.path());
    m.pieces[size_t(v.unk)].type = UNKNOWN;
  }
  for (const auto& p : m.pieces)
    if (p.type == UNKNOWN) m.unk_id = int64_t(&p - m.pieces.data());
  v.unk = m.unk_id;
  // sentencepiece finds BOS/EOS/PAD by their pieces (and uses them only if they are control pieces).
  m.bos_id = v.bos;
  m.eos_id = v.eos;
  m.pad_id = v.pad;
  m.unk_piece = m.pieces[size_t(m.unk_id)].text;
  if (v.bos >= 0) m.bos_piece = v.tokens[size_t(v.bos)];
  if (v.eos >= 0) m.eos_piece = v.tokens[size_t(v.eos)];
  if (v.pad >= 0) m.pad_piece = v.tokens[size_t(v.pad)];
  out.tokenizer_model = serialize_sentencepiece(m);
  out.tokenizer_json = json::parse(sentencepiece_tokenizer_json(out.tokenizer_model, f.path()));
  // sentencepiece_tokenizer_json always prepends BOS; the file says whether to.
  out.tokenizer_json["post_processor"] =
      (v.add_bos && v.bos >= 0) || (v.add_eos && v.eos >= 0)
          ? template_processing(v.add_bos && v.bos >= 0 ? &v.tokens[size_t(v.bos)] : nullptr, v.bos,
                                v.add_eos && v.eos >= 0 ? &v.tokens[size_t(v.eos)] : nullptr, v.eos)
          : json(nullptr);
  fill_config(out, f, v, model_max_length);
  return out;
}

// ---------------------------------------------------------------- model folder -> GGUF

json read_json(const fs::path& p) {
  json j = json::parse(read_file(p.string()), nullptr, false);
  if (j.is_discarded()) input_error("{}: not valid JSON", p.string());
  return j;
}

std::string token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

struct Specials {
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false, add_eos = false;
  std::string chat_template;
};

// tokenizer_config.json's tokens and flags, then config.json's ids, as kiln's model loader takes them.
void read_specials(const fs::path& dir, const std::unordered_map<std::string, int64_t>& ids, Specials& s) {
  const fs::path tc = dir / "tokenizer_config.json";
  if (fs::exists(tc)) {
    const json c = read_json(tc);
    const std::pair<const char*, int64_t*> named[] = {{"bos_token", &s.bos}, {"eos_token", &s.eos}, {"unk_token", &s.unk}, {"pad_token", &s.pad}};
    for (const auto& [key, dst] : named) {
      if (!c.contains(key) || c[key].is_null()) continue;
      const std::string t = token_text(c[key]);
      auto it = ids.find(t);
      if (it == ids.end()) input_error("{}: {} `{}` is not in the vocabulary", tc.string(), key, t);
      *dst = it->second;
    }
    if (c.contains("add_bos_token") && c["add_bos_token"].is_boolean()) s.add_bos = c["add_bos_token"].get<bool>();
    if (c.contains("add_eos_token") && c["add_eos_token"].is_boolean()) s.add_eos = c["add_eos_token"].get<bool>();
    if (c.contains("chat_template")) {
      const json& t = c["chat_template"];
      if (t.is_string()) {
        s.chat_template = t.get<std::string>();
      } else if (t.is_array()) {  // named templates: GGUF's one key takes the default
        for (const auto& e : t)
          if (e.value("name", std::string()) == "default") s.chat_template = e.value("template", std::string());
      }
    }
  }
  // Newer transformers save the template beside the config.
  if (s.chat_template.empty() && fs::exists(dir / "chat_template.jinja")) s.chat_template = read_file((dir / "chat_template.jinja").string());
  const fs::path cj = dir / "config.json";
  if (fs::exists(cj)) {
    const json c = read_json(cj);
    auto id_of = [&](const char* key, int64_t& dst) {
      if (!c.contains(key)) return;
      const json& x = c[key];
      if (x.is_number_integer()) dst = x.get<int64_t>();
      else if (x.is_array() && !x.empty() && x[0].is_number_integer()) dst = x[0].get<int64_t>();  // eos lists: the first
    };
    id_of("bos_token_id", s.bos);
    id_of("eos_token_id", s.eos);
    id_of("pad_token_id", s.pad);
  }
}

struct Out {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::vector<double> scores;
};

// Ids without a token (gaps, spare embedding rows) become UNUSED `[PAD<id>]`, as in llama.cpp's converter.
void pad_to(Out& o, size_t n, bool with_scores) {
  for (size_t id = 0; id < n; ++id)
    if (id >= o.tokens.size() || o.tokens[id].empty()) {
      if (id >= o.tokens.size()) {
        o.tokens.resize(id + 1);
        o.types.resize(id + 1, UNUSED);
        if (with_scores) o.scores.resize(id + 1, -1000.0);
      }
      o.tokens[id] = "[PAD" + std::to_string(id) + "]";
      o.types[id] = UNUSED;
    }
}

void set_common(gguf::Writer& w, const Out& o, const Specials& s, const std::string& origin) {
  w.set("tokenizer.ggml.tokens", gguf::Value::string_array(o.tokens));
  w.set("tokenizer.ggml.token_type", gguf::Value::i32_array(o.types));
  const std::pair<const char*, int64_t> ids[] = {{"tokenizer.ggml.bos_token_id", s.bos},
                                                 {"tokenizer.ggml.eos_token_id", s.eos},
                                                 {"tokenizer.ggml.unknown_token_id", s.unk},
                                                 {"tokenizer.ggml.padding_token_id", s.pad}};
  for (const auto& [key, id] : ids) {
    if (id < 0) continue;
    if (id >= int64_t(o.tokens.size())) input_error("{}: {} {} is not an id of the {} tokens", origin, key, id, o.tokens.size());
    w.set(key, gguf::Value::u32(uint32_t(id)));
  }
  w.set("tokenizer.ggml.add_bos_token", gguf::Value::boolean(s.add_bos));
  w.set("tokenizer.ggml.add_eos_token", gguf::Value::boolean(s.add_eos));
  if (!s.chat_template.empty()) w.set("tokenizer.chat_template", gguf::Value::str(s.chat_template));
}

void sentencepiece_to_gguf(const fs::path& dir, gguf::Writer& w, int64_t vocab_size) {
  const std::string path = (dir / "tokenizer.model").string();
  const SpmModel m = parse_sentencepiece(read_file(path), path);
  // What llama.cpp's "llama" vocabulary cannot do: it merges by score (BPE), keeps text as it is
  // and puts the word mark before words.
  if (m.model_type != 2)
    input_error("{}: a SentencePiece {} model has no GGUF form (llama.cpp's \"llama\" vocabulary is BPE)", path,
                m.model_type == 1 ? "unigram" : m.model_type == 3 ? "word" : "char");
  if (!m.charsmap.empty())
    input_error("{}: normalizer `{}` (a character map) has no GGUF form: llama.cpp does not normalize", path, m.normalizer_name);
  if (m.remove_extra_whitespaces)
    input_error("{}: remove_extra_whitespaces has no GGUF form: llama.cpp keeps every space", path);
  if (!m.escape_whitespaces || m.treat_whitespace_as_suffix)
    input_error("{}: {} has no GGUF form", path, m.treat_whitespace_as_suffix ? "treat_whitespace_as_suffix" : "escape_whitespaces false");

  Out o;
  std::unordered_map<std::string, int64_t> ids;
  for (const auto& p : m.pieces) {
    ids.emplace(p.text, int64_t(o.tokens.size()));
    o.tokens.push_back(p.text);
    o.scores.push_back(p.score);
    o.types.push_back(p.type);
  }
  // Tokens tokenizer_config.json adds after the pieces (OpenChat's <|end_of_turn|>): part of the
  // model's vocabulary, so part of the GGUF's, as control (special) or user-defined tokens.
  const fs::path tc = dir / "tokenizer_config.json";
  if (fs::exists(tc)) {
    const json c = read_json(tc);
    for (const auto& [id, content] : configured_added_tokens(dir.string())) {
      if (id < int32_t(m.pieces.size())) continue;
      const json& e = c["added_tokens_decoder"][std::to_string(id)];
      if (size_t(id) >= o.tokens.size()) {
        o.tokens.resize(size_t(id) + 1);
        o.types.resize(size_t(id) + 1, UNUSED);
        o.scores.resize(size_t(id) + 1, 0.0);
      }
      o.tokens[size_t(id)] = content;
      o.types[size_t(id)] = e.value("special", true) ? CONTROL : USER_DEFINED;
      ids.emplace(content, id);
    }
  }
  if (vocab_size > 0 && size_t(vocab_size) < o.tokens.size())
    input_error("{}: the tokenizer has {} tokens, more than the model's vocab_size {}", path, o.tokens.size(), vocab_size);
  pad_to(o, std::max(o.tokens.size(), size_t(std::max<int64_t>(vocab_size, 0))), true);

  Specials s;
  s.unk = m.unk_id;
  s.bos = m.bos_id;
  s.eos = m.eos_id;
  s.pad = m.pad_id;
  s.add_bos = true;  // LlamaTokenizer's default
  read_specials(dir, ids, s);
  w.set("tokenizer.ggml.model", gguf::Value::str("llama"));
  set_common(w, o, s, path);
  w.set("tokenizer.ggml.scores", gguf::Value::f32_array(o.scores));
  w.set("tokenizer.ggml.add_space_prefix", gguf::Value::boolean(m.add_dummy_prefix));
}

void byte_level_to_gguf(const fs::path& dir, gguf::Writer& w, int64_t vocab_size) {
  const std::string path = (dir / "tokenizer.json").string();
  const json j = read_json(path);
  try {
    const json& model = j.value("model", json::object());
    if (model.value("type", std::string()) != "BPE")
      input_error("{}: model.type `{}` has no GGUF form kiln writes (byte-level BPE)", path, model.value("type", std::string("?")));
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      input_error("{}: normalizer `{}` has no GGUF form: llama.cpp does not normalize byte-level BPE", path,
                  j["normalizer"].value("type", std::string("?")));
    if (model.value("byte_fallback", false))
      input_error("{}: model.byte_fallback: a SentencePiece-style tokenizer.json (give the model's tokenizer.model)", path);
    std::vector<std::string> steps;
    pre_steps(j.value("pre_tokenizer", json()), path, steps);
    const bool ignore_merges = model.value("ignore_merges", false);
    const PreRule* rule = nullptr;
    const PreRule* near = nullptr;  // the same regexes, the other ignore_merges
    for (const auto& r : pre_rules()) {
      if (!rule_matches(r, steps)) continue;
      if (r.ignore_merges == ignore_merges && !rule) rule = &r;
      if (r.ignore_merges != ignore_merges && !near) near = &r;
    }
    if (!rule) {
      if (near)
        input_error("{}: model.ignore_merges = {} with the pre-tokenizer of GGUF's `{}`, which has it {}", path, ignore_merges,
                    near->names[0], near->ignore_merges);
      input_error("{}: the pre-tokenizer ({}) matches no GGUF tokenizer.ggml.pre kiln knows ({})", path, join(steps, ", "),
                  join(gguf_pre_names(), ", "));
    }

    Out o;
    std::unordered_map<std::string, int64_t> ids;
    // Ids are dense in every real tokenizer; a bound keeps a damaged id from sizing the tables.
    const int64_t max_id = 2 * int64_t(model.value("vocab", json::object()).size() + j.value("added_tokens", json::array()).size()) + 1024;
    auto put = [&](const std::string& t, int64_t id, int64_t type) {
      if (id < 0 || id > max_id) input_error("{}: token `{}` has id {}", path, t, id);
      if (size_t(id) >= o.tokens.size()) {
        o.tokens.resize(size_t(id) + 1);
        o.types.resize(size_t(id) + 1, UNUSED);
      }
      o.tokens[size_t(id)] = t;
      o.types[size_t(id)] = type;
      ids[t] = id;
    };
    const json vocab = model.value("vocab", json::object());
    for (const auto& [t, id] : vocab.items()) put(t, id.get<int64_t>(), NORMAL);
    for (const auto& a : j.value("added_tokens", json::array()))
      put(a.value("content", std::string()), a.value("id", int64_t(-1)), a.value("special", false) ? CONTROL : USER_DEFINED);
    if (vocab_size > 0 && size_t(vocab_size) < o.tokens.size())
      input_error("{}: the tokenizer has {} tokens, more than the model's vocab_size {}", path, o.tokens.size(), vocab_size);
    pad_to(o, std::max(o.tokens.size(), size_t(std::max<int64_t>(vocab_size, 0))), false);

    std::vector<std::string> merges;
    for (const auto& mg : model.value("merges", json::array())) {
      std::string a, b;
      if (mg.is_string()) {
        merges.push_back(mg.get<std::string>());
        continue;
      }
      a = mg.at(0).get<std::string>();
      b = mg.at(1).get<std::string>();
      // GGUF spells a merge `left right`: a part with a space in it could not be read back.
      if (a.empty() || a.find(' ') != std::string::npos || b.find(' ') != std::string::npos)
        input_error("{}: merge (`{}`, `{}`) has a space in it, which GGUF's `left right` cannot hold", path, a, b);
      merges.push_back(a + " " + b);
    }

    Specials s;
    // Without add_bos_token, BOS is added where the post-processor's template starts with a token.
    const json& post = j.value("post_processor", json());
    if (post.is_object() && post.value("type", std::string()) == "TemplateProcessing") {
      const json& single = post.value("single", json::array());
      s.add_bos = !single.empty() && single.front().contains("SpecialToken");
      s.add_eos = single.size() > 1 && single.back().contains("SpecialToken");
    }
    read_specials(dir, ids, s);
    w.set("tokenizer.ggml.model", gguf::Value::str("gpt2"));
    w.set("tokenizer.ggml.pre", gguf::Value::str(rule->names[0]));
    set_common(w, o, s, path);
    w.set("tokenizer.ggml.merges", gguf::Value::string_array(std::move(merges)));
  } catch (const json::exception& e) {
    input_error("{}: not a tokenizer.json kiln can read: {}", path, e.what());
  }
}

}  // namespace

std::vector<std::string> gguf_pre_names() {
  std::vector<std::string> out;
  for (const auto& r : pre_rules()) out.insert(out.end(), r.names.begin(), r.names.end());
  return out;
}

HfTokenizerFiles tokenizer_from_gguf(const gguf::File& f, int64_t model_max_length) {
  if (!f.has("tokenizer.ggml.model")) input_error("{}: no tokenizer (tokenizer.ggml.model is missing)", f.path());
  const std::string model = f.str("tokenizer.ggml.model");
  if (model == "gpt2") return byte_level_from_gguf(f, model_max_length);
  if (model == "llama") return sentencepiece_from_gguf(f, model_max_length);
  input_error("{}: tokenizer.ggml.model = \"{}\" is not supported (kiln knows: gpt2, llama)", f.path(), model);
}

void tokenizer_to_gguf(const std::string& model_dir, gguf::Writer& w, int64_t vocab_size) {
  const fs::path dir = model_dir;
  if (fs::exists(dir / "tokenizer.model"))
    sentencepiece_to_gguf(dir, w, vocab_size);
  else if (fs::exists(dir / "tokenizer.json"))
    byte_level_to_gguf(dir, w, vocab_size);
  else
    input_error("{}: no tokenizer.model or tokenizer.json in the folder", model_dir);
}

}  // namespace kiln::data
