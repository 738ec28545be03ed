// `kiln tokenizer stats TOKENIZER CORPUS... [--chars N] [--json]`: how a tokenizer cuts a corpus:
// characters (Unicode code points) and bytes per token, the share of bytes that went to byte
// tokens (SentencePiece byte fallback; for byte-level BPE, tokens holding one byte of a multi-byte
// character), and tokenization speed. TOKENIZER is a model folder, a tokenizer.model or a
// tokenizer.json. Under mpirun each rank encodes a contiguous share of each corpus's lines and the
// counts are summed (split at line starts: SentencePiece then adds its word-start mark there too).
// --lines encodes each line alone, without its newline, as spm_encode does.
//
// `kiln tokenizer train --type bpe|unigram --vocab-size N --out DIR CORPUS...`: a new SentencePiece
// vocabulary from corpora with libsentencepiece's trainer (its spm_train command), with the settings of the LEP paper's
// tokenizers (byte fallback, split digits, nmt_nfkc normaliser; <unk> 0, <s> 1, </s> 2, no pad),
// written as a model folder's tokenizer files (tokenizer.model, its tokenizer.json form for Hugging
// Face `tokenizers`, tokenizer_config.json) into a new DIR.
//
// `kiln tokenizer extend BASE ADD --out DIR [--script S]`: BASE plus every token of ADD it lacks (with
// --script, only those holding a letter of that script), appended after
// BASE's ids (data/vocab_edit.h), written with BASE's tokenizer_config.json and
// special_tokens_map.json into a new DIR; every old id is checked to keep its piece.
//
// `kiln tokenizer shrink BASE CORPUS... --keep N --out DIR [--extend ADD]`: a byte-level BPE
// tokenizer cut to N model tokens (every byte, then the most frequent on the corpora with what
// their merges are made of; added tokens kept on top), then optionally extended with ADD: LEP's
// Optimized tokenizer (data/vocab_edit.h).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <iostream>
#include <thread>
#include <nlohmann/json.hpp>

#include "cli/verbs.h"
#include "core/config.h"
#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "data/vocab_edit.h"
#include "parallel/communicator.h"
#include "parallel/world.h"

namespace kiln::cli {

namespace {
std::string g_tok;
std::vector<std::string> g_corpora;
int64_t g_chars = 0;
bool g_json = false, g_lines = false;
struct TrainArgs {
  std::vector<std::string> corpora;
  std::string type = "bpe", out;
  int64_t vocab_size = 32000, threads = 0, sentences = 0;
  double coverage = 0.9995;
} g_train;
std::string g_base, g_add, g_extend_out, g_script;
std::vector<std::string> g_shrink_corpora;
int32_t g_keep = 0;

// Copies BASE's tokenizer_config.json (adapted to the new tokenizer in `dir`: data/vocab_edit.h) and
// special_tokens_map.json into `dir`.
void copy_configs(const data::Tokenizer& base, const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path from = fs::path(base.path()).parent_path();
  data::Tokenizer now(dir);
  if (fs::exists(from / "tokenizer_config.json")) {
    write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(),
                      data::adapt_tokenizer_config(read_file((from / "tokenizer_config.json").string()), now));
  }
  if (fs::exists(from / "special_tokens_map.json"))
    write_file_atomic((fs::path(dir) / "special_tokens_map.json").string(), read_file((from / "special_tokens_map.json").string()));
}

int64_t code_points(const std::string& s, size_t b, size_t e) {
  int64_t n = 0;
  for (size_t i = b; i < e; ++i) n += (uint8_t(s[i]) & 0xC0) != 0x80;
  return n;
}

// The first n code points (n <= 0: all).
std::string first_chars(const std::string& s, int64_t n) {
  if (n <= 0) return s;
  size_t i = 0;
  for (int64_t k = 0; i < s.size(); ++i)
    if ((uint8_t(s[i]) & 0xC0) != 0x80 && k++ == n) break;
  return s.substr(0, i);
}

// As spm_encode reads a file: each line alone, without its newline; the ids of all lines.
std::vector<int32_t> encode_lines(const data::Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  for (size_t p = 0; p < text.size();) {
    size_t nl = text.find('\n', p);
    if (nl == std::string::npos) nl = text.size();
    std::vector<int32_t> line = tok.encode(text.substr(p, nl - p), /*add_bos=*/false);
    ids.insert(ids.end(), line.begin(), line.end());
    p = nl + 1;
  }
  return ids;
}

int run_stats() {
  auto& world = world_for_cpu_work();
  log::setup(world.rank(), world.size(), false, log::Level::info);
  data::Tokenizer tok(g_tok);
  DistConfig dc;
  dc.backend = "mpi";
  auto comm = parallel::make_communicator(dc, world);
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& path : g_corpora) {
    const std::string text = first_chars(read_file(path), g_chars);
    // This rank's share: from the first line start at or after size*r/N to the one at size*(r+1)/N.
    auto cut = [&](int r) {
      size_t at = text.size() * size_t(r) / size_t(world.size());
      if (r == 0 || r == world.size()) return at;
      size_t nl = text.find('\n', at);
      return nl == std::string::npos ? text.size() : nl + 1;
    };
    const size_t b = cut(world.rank()), e = cut(world.rank() + 1);
    const std::string mine = text.substr(b, e - b);
    comm->barrier("stats start");
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> ids;
    if (g_lines) {
      ids = encode_lines(tok, mine);
    } else {
      ids = tok.encode(mine, /*add_bos=*/false);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int64_t byte_tokens = 0;
    for (int32_t id : ids) byte_tokens += tok.is_byte(id);
    at::Tensor c = at::tensor({double(ids.size()), double(code_points(text, b, e)), double(e - b), double(byte_tokens)},
                              at::TensorOptions().dtype(at::kDouble));
    comm->all_reduce(c, parallel::ReduceOp::Sum, "stats counts");
    at::Tensor slowest = at::tensor({secs}, at::TensorOptions().dtype(at::kDouble));
    // Speed over the slowest rank's time.
    at::Tensor all = at::zeros({world.size()}, at::kDouble);
    comm->all_gather(all, slowest, "stats time");
    const double tokens = c[0].item<double>(), chars = c[1].item<double>(), bytes = c[2].item<double>(),
                 fallback = c[3].item<double>(), wall = all.max().item<double>();
    nlohmann::json j = {{"corpus", path},          {"tokenizer", tok.path()},
                        {"kind", tok.kind()},       {"vocab_size", tok.vocab_size()},
                        {"ranks", world.size()},    {"characters", int64_t(chars)},
                        {"bytes", int64_t(bytes)},  {"tokens", int64_t(tokens)},
                        {"chars_per_token", chars / tokens},
                        {"bytes_per_token", bytes / tokens},
                        {"byte_fallback_share", fallback / bytes},
                        {"seconds", wall},          {"tokens_per_second", tokens / wall}};
    out.push_back(j);
  }
  if (!world.is_root()) return kExitOk;
  if (g_json) {
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  std::cout << fmt::format("tokenizer {} ({}, {} ids), {} rank(s)\n\n", tok.path(), tok.kind(), tok.vocab_size(),
                           world.size());
  std::cout << "| corpus | characters | tokens | chars/token | bytes/token | byte fallback | tokens/s |\n"
               "|---|---|---|---|---|---|---|\n";
  for (auto& j : out)
    std::cout << fmt::format("| {} | {} | {} | {:.3f} | {:.3f} | {:.2f}% | {:.0f} |\n", j["corpus"].get<std::string>(),
                             j["characters"].get<int64_t>(), j["tokens"].get<int64_t>(), j["chars_per_token"].get<double>(),
                             j["bytes_per_token"].get<double>(), 100 * j["byte_fallback_share"].get<double>(),
                             j["tokens_per_second"].get<double>());
  return kExitOk;
}
// libsentencepiece's trainer through its own command, spm_train (Debian's `sentencepiece`): inside
// kiln the trainer's logging crashes on the iostreams of the privately loaded library.
void run_spm_train(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "spm_train", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    input_error("cannot run spm_train ({}): install Debian's `sentencepiece` package (scripts/install-deps.sh does)",
                std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  // The trainer's last lines say why (a too large vocabulary for the corpus, a bad option).
  std::string text = read_file(log_path), last;
  std::istringstream lines(text);
  for (std::string l; std::getline(lines, l);)
    if (!l.empty()) last = l;
  input_error("spm_train failed ({}): {}", WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status)) : "killed",
              last);
}

int run_train() {
  namespace fs = std::filesystem;
  log::setup(0, 1, false, log::Level::info);
  const TrainArgs& a = g_train;
  if (fs::exists(a.out)) input_error("--out {}: exists (kiln tokenizer train never overwrites)", a.out);
  for (auto& c : a.corpora)
    if (!fs::is_regular_file(c)) input_error("{}: no such corpus file", c);
  std::string inputs;
  for (auto& c : a.corpora) inputs += (inputs.empty() ? "" : ",") + fs::absolute(c).string();
  const int64_t threads = a.threads > 0 ? a.threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  const auto t0 = std::chrono::steady_clock::now();
  write_dir_atomic(a.out, [&](const std::string& tmp) {
    const std::string prefix = (fs::path(tmp) / "tokenizer").string();
    std::vector<std::string> args = {
        "spm_train", "--input=" + inputs, "--model_prefix=" + prefix, "--model_type=" + a.type,
        fmt::format("--vocab_size={}", a.vocab_size), fmt::format("--character_coverage={}", a.coverage),
        "--byte_fallback=true", "--split_digits=true", "--normalization_rule_name=nmt_nfkc", "--unk_id=0",
        "--bos_id=1", "--eos_id=2", "--pad_id=-1", fmt::format("--num_threads={}", threads)};
    if (a.sentences > 0) {
      args.push_back(fmt::format("--input_sentence_size={}", a.sentences));
      args.push_back("--shuffle_input_sentence=true");
    }
    log::info("training a {} vocabulary of {} pieces on {} ({} threads)", a.type, a.vocab_size, inputs, threads);
    run_spm_train(args, (fs::path(tmp) / "train.log").string());
    fs::remove(prefix + ".vocab");
    fs::remove(fs::path(tmp) / "train.log");
    write_file_atomic((fs::path(tmp) / "tokenizer.json").string(),
                      data::sentencepiece_tokenizer_json(read_file(prefix + ".model"), prefix + ".model"));
    // The generic class: transformers then loads tokenizer.json as written (its LlamaTokenizer
    // would rebuild a pipeline without the nmt_nfkc map).
    nlohmann::json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"bos_token", "<s>"},        {"eos_token", "</s>"},
                          {"unk_token", "<unk>"},                {"add_bos_token", true},      {"add_eos_token", false},
                          {"legacy", false},                     {"model_max_length", 1000000000}};
    write_file_atomic((fs::path(tmp) / "tokenizer_config.json").string(), cfg.dump(2) + "\n");
  });
  data::Tokenizer tok(a.out);
  log::info("{}: {} pieces, trained in {:.1f} s", (fs::path(a.out) / "tokenizer.model").string(), tok.vocab_size(),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return kExitOk;
}
int run_extend() {
  namespace fs = std::filesystem;
  log::setup(0, 1, false, log::Level::info);
  if (fs::exists(g_extend_out)) input_error("--out {}: exists (kiln tokenizer extend never overwrites)", g_extend_out);
  data::Tokenizer base(g_base), add(g_add);
  data::ExtendSummary sum;
  write_dir_atomic(g_extend_out, [&](const std::string& tmp) {
    sum = data::extend_tokenizer(base, add, tmp, g_script);
    copy_configs(base, tmp);
    data::Tokenizer ext(tmp);
    if (ext.vocab_size() != sum.new_size)
      throw InternalError(fmt::format("extend: wrote {} ids, the result loads with {}", sum.new_size, ext.vocab_size()));
    for (int32_t id = 0; id < base.vocab_size(); ++id)
      if (ext.piece(id) != base.piece(id))
        throw InternalError(fmt::format("extend: id {} was `{}`, is `{}`", id, base.piece(id), ext.piece(id)));
  });
  log::info("{} ({}, {} ids) + {} new tokens of {} = {} ids{}{}; every old id keeps its token", g_extend_out, base.kind(),
            sum.old_size, sum.added, add.path(), sum.new_size,
            sum.merges_added ? fmt::format(", {} merges added", sum.merges_added) : std::string(),
            g_script.empty() ? std::string() : fmt::format(" ({} without a {} letter left out)", sum.filtered, g_script));
  if (sum.skipped_bytes)
    log::warn("{} byte pieces of {} not added: {} has no byte fallback", sum.skipped_bytes, add.path(), base.path());
  return kExitOk;
}
int run_shrink() {
  namespace fs = std::filesystem;
  log::setup(0, 1, false, log::Level::info);
  if (fs::exists(g_extend_out)) input_error("--out {}: exists (kiln tokenizer shrink never overwrites)", g_extend_out);
  data::Tokenizer base(g_base);
  std::vector<int64_t> counts(size_t(base.vocab_size()), 0);
  for (auto& path : g_shrink_corpora) {
    for (int32_t id : encode_lines(base, read_file(path))) ++counts[size_t(id)];
  }
  data::ShrinkSummary sum;
  data::ExtendSummary ext;
  write_dir_atomic(g_extend_out, [&](const std::string& tmp) {
    sum = data::shrink_tokenizer(base, counts, g_keep, tmp);
    if (!g_add.empty()) {
      data::Tokenizer shrunk(tmp), add(g_add);
      ext = data::extend_tokenizer(shrunk, add, tmp, g_script);
    }
    copy_configs(base, tmp);
    data::Tokenizer done(tmp);
    const int32_t want = g_add.empty() ? sum.new_size : ext.new_size;
    if (done.vocab_size() != want)
      throw InternalError(fmt::format("shrink: wrote {} ids, the result loads with {}", want, done.vocab_size()));
  });
  log::info("{}: {} of {}'s {} ids kept ({} model tokens with every byte, {} merges; {:.2f}% of the corpus's tokens), "
            "{} ids{}",
            g_extend_out, sum.new_size, base.path(), sum.old_size, sum.kept, sum.merges_kept, 100 * sum.corpus_share,
            g_add.empty() ? sum.new_size : ext.new_size,
            g_add.empty() ? std::string() : fmt::format(" after adding {} tokens of {}", ext.added, g_add));
  return kExitOk;
}
}  // namespace

void add_tokenizer(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("tokenizer", "Tokenizer tools: stats, train, extend, shrink");
  sub->require_subcommand(1);
  auto* stats = sub->add_subcommand("stats", "Characters and bytes per token, byte-fallback share and speed on corpora");
  stats->add_option("tokenizer", g_tok, "A model folder, tokenizer.model or tokenizer.json")->required();
  stats->add_option("corpus", g_corpora, "UTF-8 text files")->required();
  stats->add_option("--chars", g_chars, "Only the first N characters (code points) of each corpus");
  stats->add_flag("--json", g_json, "Print JSON instead of a table");
  stats->add_flag("--lines", g_lines, "Encode each line alone, without its newline (as spm_encode does)");
  stats->callback([&action] { action = [] { return run_stats(); }; });
  auto* train = sub->add_subcommand("train", "A new SentencePiece vocabulary from corpora, written as a model folder's tokenizer files");
  train->add_option("corpus", g_train.corpora, "UTF-8 text files (a sentence or document per line)")->required();
  train->add_option("--out", g_train.out, "New folder for tokenizer.model, tokenizer.json and tokenizer_config.json")->required();
  train->add_option("--type", g_train.type, "bpe or unigram")->check(CLI::IsMember({"bpe", "unigram"}))->capture_default_str();
  train->add_option("--vocab-size", g_train.vocab_size, "Pieces in the vocabulary")->check(CLI::Range(16, 1 << 22))->capture_default_str();
  train->add_option("--character-coverage", g_train.coverage, "Share of characters the pieces cover (the rest: bytes)")->capture_default_str();
  train->add_option("--sentences", g_train.sentences, "Train on a random sample of this many lines (0: all)");
  train->add_option("--threads", g_train.threads, "Trainer threads (default: all cores)");
  train->callback([&action] { action = [] { return run_train(); }; });
  auto* extend = sub->add_subcommand("extend", "BASE plus every token of ADD it lacks, appended after BASE's ids");
  extend->add_option("base", g_base, "The tokenizer to extend (model folder, tokenizer.model or tokenizer.json)")->required();
  extend->add_option("add", g_add, "The tokenizer whose tokens are added (e.g. from `kiln tokenizer train`)")->required();
  extend->add_option("--out", g_extend_out, "New folder for the extended tokenizer")->required();
  extend->add_option("--script", g_script, "Add only tokens holding a letter of this script (cyrillic, latin, greek, "
                                           "arabic, ...): other text keeps BASE's cuts");
  extend->callback([&action] { action = [] { return run_extend(); }; });
  auto* shrink = sub->add_subcommand("shrink", "A byte-level BPE tokenizer cut to its N most frequent tokens on corpora (then extended)");
  shrink->add_option("base", g_base, "The tokenizer to shrink (a model folder or tokenizer.json)")->required();
  shrink->add_option("corpus", g_shrink_corpora, "UTF-8 text files whose token counts decide")->required();
  shrink->add_option("--keep", g_keep, "Model tokens to keep, the 256 bytes included (added tokens come on top)")->required()->check(CLI::Range(256, 1 << 24));
  shrink->add_option("--extend", g_add, "Then add every token of this tokenizer (LEP's Optimized)");
  shrink->add_option("--script", g_script, "With --extend: add only tokens holding a letter of this script");
  shrink->add_option("--out", g_extend_out, "New folder for the tokenizer")->required();
  shrink->callback([&action] { action = [] { return run_shrink(); }; });
}

}  // namespace kiln::cli
