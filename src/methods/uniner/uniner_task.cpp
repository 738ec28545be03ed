#include "methods/uniner/uniner_task.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <set>

#include "core/config.h"
#include "core/error.h"
#include "core/files.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/store.h"
#include "methods/registry.h"
#include "methods/uniner/instructions.h"
#include "methods/uniner/span_f1.h"
#include "model/generate.h"
#include "model/hf_io.h"

namespace kiln::methods {

KILN_REGISTER_TASK("uniner", "UniversalNER: instruction tuning for open NER, evaluated by generated-span F1", UninerTask);

namespace {

namespace fs = std::filesystem;
using recipe::Node;

struct Source {
  std::string name, format, train, eval;
  double weight = 1;
  std::vector<std::pair<std::string, std::string>> types;  // tag -> the name asked, in recipe order
  std::map<std::string, std::string> renames;  // task.types beside sources: names of tags the data has
};

struct Settings {
  std::string system_prompt;        // evaluation prompts (and training, unless train_system_prompt)
  std::string train_system_prompt;
  TurnPieces train_pieces = TurnPieces::joined;
  bool shuffle_questions = false;
  double negative_rate = 0;
  bool dataset_prefix = false;
  int64_t max_new_tokens = 256;
  uniner::AnswerAt answer_at = uniner::AnswerAt::start;  // scoring only: not in the fingerprint
  uint64_t seed = 0;
  std::vector<Source> sources;

  // Everything that changes the stored examples (the files themselves are checked by checksum).
  std::string fingerprint() const {
    nlohmann::json j;
    j["system_prompt"] = system_prompt;
    j["train_system_prompt"] = train_system_prompt;
    j["train_turns"] = train_pieces == TurnPieces::separate ? "separate" : "joined";
    j["shuffle_questions"] = shuffle_questions;
    j["negative_rate"] = negative_rate;
    j["dataset_prefix"] = dataset_prefix;
    j["seed"] = seed;
    for (const auto& s : sources) {
      nlohmann::json t = nlohmann::json::array();
      for (const auto& [tag, name] : s.types) t.push_back({tag, name});
      for (const auto& [tag, name] : s.renames) t.push_back({tag, name, "rename"});
      j["sources"].push_back({{"name", s.name}, {"format", s.format}, {"weight", s.weight}, {"types", t}});
    }
    return j.dump();
  }
};

std::vector<std::pair<std::string, std::string>> read_types(recipe::Section& s) {
  std::vector<std::pair<std::string, std::string>> out;
  const Node* n = s.raw("types");
  if (!n) return out;
  if (n->kind != Node::Kind::Map)
    input_error("{}: key `{}`: expected a mapping of entity tags to the names asked (e.g. PER: person)", n->where(),
                s.key_path("types"));
  for (const auto& [tag, v] : n->map) {
    if (v.kind != Node::Kind::Scalar || v.scalar.empty())
      input_error("{}: key `{}.{}`: expected the name asked for this tag", v.where(), s.key_path("types"), tag);
    out.emplace_back(tag, v.scalar);
  }
  return out;
}

// The name of a dataset when the recipe gives none: the folder of its file (conll2003/eng.train).
std::string default_name(const DataConfig& c) {
  const std::string& f = c.train.empty() ? c.eval : c.train;
  std::string n = fs::path(f).parent_path().filename().string();
  return n.empty() ? "data" : n;
}

// Reads `task:`; the tree is written back with defaults (see recipe::Section).
Settings read_settings(recipe::Section& task, Node& task_node, const Recipe& r) {
  Settings st;
  st.system_prompt = task.get_string("system_prompt", kDefaultSystemPrompt);
  st.train_system_prompt = task.get_string("train_system_prompt", st.system_prompt);
  st.train_pieces = task.get_choice("train_turns", "joined", {"joined", "separate"}) == "separate"
                        ? TurnPieces::separate
                        : TurnPieces::joined;
  st.shuffle_questions = task.get_bool("shuffle_questions", false);
  st.negative_rate = task.get_double("negative_rate", 0.0, 0.0, 100.0);
  st.dataset_prefix = task.get_bool("dataset_prefix", false);
  st.max_new_tokens = task.get_int("max_new_tokens", 256, 1, 1 << 20);
  st.answer_at = uniner::parse_answer_at(task.get_choice("answer_at", "start", {"start", "anywhere"}));
  st.seed = uint64_t(r.train.seed);
  // task.types: the types the single source asks; beside task.sources, the names of tags that a
  // source's files hold and its own `types` do not name (e.g. organisation: organization across
  // CrossNER's domains).
  const auto shared_types = read_types(task);
  if (const Node* list = task.raw("sources")) {
    if (list->kind != Node::Kind::List || list->list.empty())
      input_error("{}: key `task.sources`: expected a list of sources ({{name, format, train, eval, weight, types}})",
                  list->where());
    if (!r.data.train.empty() || !r.data.eval.empty())
      input_error("{}: key `task.sources`: the files are given per source; leave data.train and data.eval unset",
                  list->where());
    Node* items = task_node.find("sources");
    for (size_t i = 0; i < items->list.size(); ++i) {
      recipe::Section s(&items->list[i], fmt::format("task.sources[{}]", i));
      Source src;
      src.name = s.require_string("name");
      src.format = s.get_choice("format", "conll", {"conll", "conversation"});
      src.train = s.get_path("train", "");
      src.eval = s.get_path("eval", "");
      src.weight = s.get_double("weight", 1.0, 0.0, 1e6);
      src.types = read_types(s);
      src.renames.insert(shared_types.begin(), shared_types.end());
      s.finish();
      if (src.train.empty() && src.eval.empty())
        input_error("{}: key `task.sources[{}]`: give its `train` file, its `eval` file or both", s.where("name"), i);
      st.sources.push_back(std::move(src));
    }
    task.ignore("dataset");
  } else {
    Source src;
    src.name = task.get_string("dataset", default_name(r.data));
    src.format = r.data.format;
    src.train = r.data.train, src.eval = r.data.eval;
    src.types = shared_types;
    st.sources.push_back(std::move(src));
  }
  std::set<std::string> names, files;
  for (const auto& s : st.sources) {
    if (s.name.empty() || s.name.find(':') != std::string::npos)
      input_error("{}: source name `{}` must be non-empty and without `:`", task.where("sources"), s.name);
    if (!names.insert(s.name).second) input_error("{}: two sources are named `{}`", task.where("sources"), s.name);
    for (const std::string& f : {s.train, s.eval})
      if (!f.empty() && !files.insert(f).second)
        input_error("{}: {} is given twice; a file belongs to one source and split", task.where("sources"), f);
  }
  return st;
}

Settings settings_of(const Recipe& r) {
  Node tree = r.tree;  // read from a copy: build() writes the defaults into the recipe
  recipe::Section task = recipe::Section::root(tree).sub("task");
  return read_settings(task, *tree.find("task"), r);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

class UninerEncoder : public data::Encoder {
 public:
  explicit UninerEncoder(Settings st) : st_(std::move(st)) {}
  std::string kind() const override { return "uniner"; }
  std::vector<data::Field> fields() const override {
    return {{"loss_mask", data::DType::u8, data::Per::token},
            {"prompt_len", data::DType::i32, data::Per::example},
            {"question", data::DType::i32, data::Per::example},
            {"gold", data::DType::u8, data::Per::ragged}};
  }
  std::string settings() const override { return st_.fingerprint(); }
  void check(const DataConfig& c) const override {
    for (const auto& s : st_.sources)
      if (s.format != "conll" && s.format != "conversation")
        input_error("key `data.format`: method uniner reads conll (BIO/IOB1 tagged) or conversation (Pile-NER / "
                    "UniversalNER JSON) files, not `{}`",
                    s.format);
    if (c.kind != "auto" && c.kind != "uniner")
      input_error("key `data.kind`: method uniner makes `uniner` stores (or `auto`), not `{}`", c.kind);
  }
  std::vector<std::string> sources(const DataConfig&, const std::string& split) const override {
    std::vector<std::string> out;
    for (const auto& s : st_.sources)
      if (const std::string& f = split == "train" ? s.train : s.eval; !f.empty()) out.push_back(f);
    return out;
  }

  std::vector<data::Record> read(const DataConfig& c, const std::string& split, const std::string& path,
                                 data::ReadStats* stats) const override {
    const bool train = split == "train";
    const Source* src = nullptr;
    for (const auto& s : st_.sources)
      if ((train ? s.train : s.eval) == path) src = &s;
    KILN_CHECK(src, "uniner: {} is not a {} source", path, split);
    data::ReadOptions o = data::options_from(c);
    o.label_field.clear();
    const std::string prefix = st_.dataset_prefix ? "Dataset: " + src->name : "";
    data::ReadStats st;
    std::vector<data::Record> out;
    std::vector<uniner::Passage> passages;
    if (src->format == "conll") {
      passages = uniner::passages_from_tags(data::read_conll(path, o, &st), types_of(*src, o));
    } else {
      std::vector<data::Record> recs = data::read_conversations(path, o, &st);
      if (!train) {
        // Already one question per example, as UniversalNER's evaluation files are.
        out = uniner::evaluation_records_from_conversations(recs, src->name);
        if (!prefix.empty())
          for (auto& r : out) r.turns[0].value = prefix + "\n" + r.turns[0].value;
      } else {
        passages = uniner::passages_from_conversations(recs, o.skip_bad, &st);
      }
    }
    if (train) {
      const uint64_t seed = st_.seed ^ fnv1a(src->name);
      int64_t neg = uniner::add_negative_types(passages, st_.negative_rate, seed);
      if (neg > 0) log::debug("uniner: {}: {} negative types added to {} passages", path, neg, passages.size());
      auto weighted = uniner::apply_weight(passages, src->weight, seed + 1);
      if (st_.shuffle_questions) uniner::shuffle_questions(weighted, seed + 2);
      for (const auto& p : weighted) out.push_back(uniner::training_record(p, prefix));
    } else if (out.empty()) {
      for (const auto& p : passages)
        for (auto& r : uniner::evaluation_records(p, prefix, src->name)) out.push_back(std::move(r));
    }
    if (stats) {
      stats->records = int64_t(out.size());
      stats->skipped = st.skipped;
      stats->first_skip = st.first_skip;
    }
    return out;
  }

  // "{dataset}:{type}" of every evaluation question, in order of first appearance.
  std::vector<std::string> labels(const DataConfig&, const std::vector<data::Record>&,
                                  const std::vector<data::Record>& eval) const override {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (const auto& r : eval)
      if (!r.label.empty() && seen.insert(r.label).second) out.push_back(r.label);
    return out;
  }

  void encode(const data::Record& rec, const data::EncodeContext& ctx, data::Example& out) const override {
    auto& mask = out.put<uint8_t>("loss_mask");
    out.ids.clear(), mask.clear();
    // Evaluation questions (a label) are asked as the official evaluation asks them; training
    // conversations are cut as the recipe's train_turns says.
    const bool question = !rec.label.empty();
    const size_t prompt =
        question ? encode_conversation(rec.turns, st_.system_prompt, ctx.tok, out.ids, mask)
                 : encode_conversation(rec.turns, st_.train_system_prompt, ctx.tok, out.ids, mask, st_.train_pieces);
    out.put<int32_t>("prompt_len") = {question ? int32_t(prompt) : 0};
    out.put<int32_t>("question") = {question ? ctx.label_id(rec.label) : -1};
    auto& gold = out.put<uint8_t>("gold");
    gold.clear();
    if (question) gold.assign(rec.turns.back().value.begin(), rec.turns.back().value.end());
  }

 private:
  // The types a tagged source asks, in order: the recipe's `types` first, then any other tag type
  // found in the source's files (train and eval: both splits ask the same types), by its own name
  // in lower case with `_` as a space (MIT's RATINGS_AVERAGE: "ratings average").
  std::vector<std::pair<std::string, std::string>> types_of(const Source& s, const data::ReadOptions& o) const {
    auto types = s.types;
    std::set<std::string> known;
    for (const auto& [tag, name] : types) known.insert(tag);
    std::vector<data::Record> all;
    for (const std::string& f : {s.train, s.eval})
      if (!f.empty()) {
        auto recs = data::read_conll(f, o);
        all.insert(all.end(), std::make_move_iterator(recs.begin()), std::make_move_iterator(recs.end()));
      }
    for (const std::string& tag : uniner::tag_types(all))
      if (!known.count(tag)) {
        auto it = s.renames.find(tag);
        std::string name = it != s.renames.end() ? it->second : tag;
        if (it == s.renames.end())
          for (auto& ch : name) ch = ch == '_' ? ' ' : char(std::tolower(static_cast<unsigned char>(ch)));
        types.emplace_back(tag, name);
      }
    return types;
  }

  Settings st_;
};

std::pair<std::string, std::string> split_label(const std::string& l) {
  size_t p = l.find(':');
  return {l.substr(0, p), p == std::string::npos ? "" : l.substr(p + 1)};
}

}  // namespace

std::unique_ptr<data::Encoder> UninerTask::encoder(const Recipe& r) const {
  return std::make_unique<UninerEncoder>(settings_of(r));
}

void UninerTask::build(Recipe& r, parallel::World& world, parallel::Communicator& comm) {
  recipe::Section task = recipe::Section::root(r.tree).sub("task");
  Settings st = read_settings(task, *r.tree.find("task"), r);
  task.finish();
  max_new_tokens_ = st.max_new_tokens;
  answer_at_ = st.answer_at;
  padding_side_ = r.data.padding_side;
  // Its conversations are FastChat's with the run's system prompt: a merged export's chat template.
  trained_chat_ = data::chat_preset("fastchat");
  trained_chat_->system_prompt = st.system_prompt;
  build_model_and_stores(r, world, comm);
  tok_ = std::make_unique<data::Tokenizer>(model::load_tokenizer(r.model.path, model_->config()));
}

LossSum UninerTask::evaluate(const data::Batch& b, train::EvalRecords& out) {
  // The teacher-forced loss of the gold answers, then the answers the model writes itself.
  LossSum ls = b["input_ids"].size(1) < 2 ? LossSum{at::zeros({}), 0} : forward(b, nullptr, nullptr);
  const at::Tensor ids = b["input_ids"].to(at::kCPU), lengths = b["lengths"].to(at::kCPU);
  const at::Tensor prompt_len = b["prompt_len"].to(at::kCPU), question = b["question"].to(at::kCPU);
  const at::Tensor index = b["example_index"].to(at::kCPU);
  const int64_t B = b.size(), T = ids.size(1);
  std::vector<std::vector<int64_t>> prompts(static_cast<size_t>(B));
  int64_t longest = 0;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t len = lengths[r].item<int64_t>(), start = padding_side_ == "left" ? T - len : 0;
    // A prompt cut by truncation is generated from what is left of it.
    const int64_t n = std::min(prompt_len[r].item<int64_t>(), len);
    auto row = ids[r].narrow(0, start, n).contiguous();
    prompts[size_t(r)].assign(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + n);
    longest = std::max(longest, n);
  }
  model::GenerateOptions o;
  o.temperature = 0;  // greedy
  // The official protocol's 256 new tokens, within the model's context.
  o.max_new_tokens = std::max<int64_t>(1, std::min(max_new_tokens_, model_->config().max_position_embeddings - longest));
  const auto t0 = std::chrono::steady_clock::now();
  auto gen = model::generate(model_, prompts, o);
  gen_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  gen_rows_ += B;
  gen_batch_ = std::max(gen_batch_, B);
  const data::Store& store = stores_.eval();
  for (int64_t r = 0; r < B; ++r) {
    const int64_t ex = index[r].item<int64_t>();
    std::vector<int32_t> toks(gen[size_t(r)].begin(), gen[size_t(r)].end());
    gen_tokens_ += int64_t(toks.size());
    out.example.push_back(ex);
    out.ints["question"].push_back(question[r].item<int64_t>());
    out.ints["generated"].push_back(int64_t(toks.size()));
    out.texts["output"].push_back(tok_->decode(toks));
    auto gold = store.get<uint8_t>("gold", ex);
    out.texts["gold"].emplace_back(reinterpret_cast<const char*>(gold.begin()), size_t(gold.size()));
  }
  return {ls.sum.detach().to(at::kCPU), ls.targets};
}

namespace {
// Counts per dataset and per (dataset, type), from gathered records.
struct Tally {
  std::map<std::string, uniner::Counts> dataset;
  std::map<std::pair<std::string, std::string>, uniner::Counts> type;
  int64_t unparseable = 0, examples = 0, generated = 0;
};

Tally tally(const train::EvalRecords& all, const std::vector<std::string>& labels, uniner::AnswerAt at) {
  Tally t;
  const auto& q = all.ints_of("question");
  const auto& output = all.texts_of("output");
  const auto& gold = all.texts_of("gold");
  const auto& generated = all.ints_of("generated");
  for (size_t i = 0; i < q.size(); ++i) {
    KILN_CHECK(q[i] >= 0 && q[i] < int64_t(labels.size()), "uniner: question id {} outside the store's {} labels",
               q[i], labels.size());
    auto [ds, type] = split_label(labels[size_t(q[i])]);
    bool parsed = false;
    auto pred = uniner::parse_answer(output[i], &parsed, at);
    auto g = uniner::parse_answer(gold[i], nullptr, at);
    t.dataset[ds].add(pred, g);
    t.type[{ds, type}].add(pred, g);
    t.unparseable += parsed ? 0 : 1;
    t.generated += generated[i];
    ++t.examples;
  }
  return t;
}
}  // namespace

std::map<std::string, double> UninerTask::metrics(const train::EvalRecords& all) {
  if (gen_rows_ > 0) {
    log::info("uniner: generated {} tokens for {} questions on this rank in {:.1f} s: {:.0f} tokens/s in batches of up "
              "to {}",
              gen_tokens_, gen_rows_, gen_seconds_, double(gen_tokens_) / std::max(gen_seconds_, 1e-9), gen_batch_);
    gen_tokens_ = gen_rows_ = gen_batch_ = 0;
    gen_seconds_ = 0;
  }
  std::map<std::string, double> m;
  Tally t = tally(all, stores_.eval().label_names(), answer_at_);
  if (t.examples == 0) return m;
  double f1 = 0, p = 0, r = 0;
  for (const auto& [ds, c] : t.dataset) {
    m["f1/" + ds] = c.f1();
    m["precision/" + ds] = c.precision();
    m["recall/" + ds] = c.recall();
    f1 += c.f1(), p += c.precision(), r += c.recall();
  }
  const double n = double(t.dataset.size());
  // Over datasets: the mean of their micro scores, as the paper averages its benchmark.
  m["f1"] = f1 / n, m["precision"] = p / n, m["recall"] = r / n;
  for (const auto& [key, c] : t.type) m["f1/" + key.first + "/" + key.second] = c.f1();
  m["unparseable"] = double(t.unparseable) / double(t.examples);
  m["generated_tokens"] = double(t.generated);
  return m;
}

std::string UninerTask::write_results(const train::EvalRecords& all, const std::string& dir) {
  const auto& labels = stores_.eval().label_names();
  Tally t = tally(all, labels, answer_at_);
  if (t.examples == 0) return "";
  // Every question with its output, as JSON lines: what a person reads to see why a score is what it is.
  const std::string path = (fs::path(dir) / "predictions.jsonl").string();
  {
    std::string f;  // written whole (core/files.h): a full disk leaves no half file
    const auto& q = all.ints_of("question");
    const auto& output = all.texts_of("output");
    const auto& gold = all.texts_of("gold");
    for (size_t i = 0; i < q.size(); ++i) {
      auto [ds, type] = split_label(labels[size_t(q[i])]);
      nlohmann::json j;
      j["example"] = all.example[i];
      j["dataset"] = ds;
      j["type"] = type;
      j["gold"] = uniner::parse_answer(gold[i], nullptr, answer_at_);
      j["output"] = output[i];
      j["predicted"] = uniner::parse_answer(output[i], nullptr, answer_at_);
      f += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      f += '\n';
    }
    write_file_atomic(path, f);
  }
  std::string md = "Span F1 by generation (UniversalNER's protocol: micro over each dataset's questions; the "
                   "predictions are in predictions.jsonl).\n\n";
  md += "| dataset | precision | recall | F1 | gold | predicted | correct |\n|---|---|---|---|---|---|---|\n";
  for (const auto& [ds, c] : t.dataset)
    md += fmt::format("| {} | {:.4f} | {:.4f} | {:.4f} | {} | {} | {} |\n", ds, c.precision(), c.recall(), c.f1(), c.gold,
                      c.predicted, c.correct);
  md += "\n| dataset | entity type | precision | recall | F1 | gold | predicted | correct |\n"
        "|---|---|---|---|---|---|---|---|\n";
  for (const auto& [key, c] : t.type)
    md += fmt::format("| {} | {} | {:.4f} | {:.4f} | {:.4f} | {} | {} | {} |\n", key.first, key.second, c.precision(),
                      c.recall(), c.f1(), c.gold, c.predicted, c.correct);
  md += fmt::format("\n{} questions, {} outputs without a parseable list, {} tokens generated.\n", t.examples,
                    t.unparseable, t.generated);
  return md;
}

}  // namespace kiln::methods
