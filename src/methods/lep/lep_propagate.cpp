#include "methods/lep/lep_propagate.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "data/vocab_edit.h"
#include "methods/lep/lep_init.h"

namespace kiln::lep {

namespace fs = std::filesystem;
using json = nlohmann::json;

LstsqFit lstsq_blockwise(int64_t n, int64_t d, const RowBlock& block, int64_t block_rows) {
  KILN_CHECK(n > 0 && d > 0 && block_rows > 0, "lstsq of {} x {} in blocks of {}", n, d, block_rows);
  at::Tensor R, QtY;  // X = Q R over the rows seen so far; QtY = Q^T Y
  for (int64_t b = 0; b < n; b += block_rows) {
    auto [X, Y] = block(b, std::min(n, b + block_rows));
    KILN_CHECK(X.scalar_type() == at::kDouble && Y.scalar_type() == at::kDouble && X.size(1) == d,
               "lstsq block of {} rows", X.size(0));
    if (R.defined()) {
      X = at::cat({R, X});
      Y = at::cat({QtY, Y});
    }
    auto [Q, Rn] = at::linalg_qr(X, "reduced");
    R = Rn;
    QtY = Q.transpose(0, 1).matmul(Y);
  }
  // ||X W - Y||^2 = ||R W - Q^T Y||^2 + what no W reaches: the small system has X's solution.
  auto [W, residuals, rank, sv] = at::linalg_lstsq(R, QtY, c10::nullopt, c10::string_view("gelsy"));
  LstsqFit fit;
  fit.W = W;
  fit.rank = rank.numel() ? rank.item<int64_t>() : std::min(R.size(0), d);
  double err = 0, norm = 0;
  for (int64_t b = 0; b < n; b += block_rows) {
    auto [X, Y] = block(b, std::min(n, b + block_rows));
    err += (X.matmul(W) - Y).pow(2).sum().item<double>();
    norm += Y.pow(2).sum().item<double>();
  }
  fit.residual = norm > 0 ? std::sqrt(err / norm) : 0.0;
  return fit;
}

Mode mode_from(const std::string& name) {
  if (name == "swap") return Mode::Swap;
  if (name == "overlap") return Mode::Overlap;
  if (name == "conversion") return Mode::Conversion;
  input_error("--mode {}: not a propagation mode (swap, overlap, conversion)", name);
}

namespace {

const char* mode_name(Mode m) { return m == Mode::Swap ? "swap" : m == Mode::Overlap ? "overlap" : "conversion"; }

// W for one matrix (E or H) of B and I, on the rows the mode names.
LstsqFit fit_one(Mode mode, const at::Tensor& B, const at::Tensor& I, const Averaging& T, int64_t shared,
                 int64_t block_rows) {
  const int64_t d = B.size(1);
  if (mode == Mode::Swap) return {at::eye(d, at::kDouble), 0.0, d};
  if (mode == Mode::Overlap)
    return lstsq_blockwise(
        shared, d,
        [&](int64_t b, int64_t e) {
          return std::make_pair(B.slice(0, b, e).to(at::kDouble), I.slice(0, b, e).to(at::kDouble));
        },
        block_rows);
  // Conversion: the rows of T B and T I, made block by block from the sparse T (no n x d copy).
  const at::Tensor Bd = B.slice(0, 0, shared).to(at::kDouble), Id = I.slice(0, 0, shared).to(at::kDouble);
  const at::Tensor mB = Bd.mean(0), mI = Id.mean(0);
  return lstsq_blockwise(
      int64_t(T.rows.size()), d,
      [&](int64_t b, int64_t e) { return std::make_pair(average_rows(T, Bd, mB, b, e), average_rows(T, Id, mI, b, e)); },
      block_rows);
}

// R W, block by block in float64, then in R's dtype.
at::Tensor apply(const at::Tensor& R, const at::Tensor& W, int64_t block_rows) {
  at::Tensor out = at::empty({R.size(0), W.size(1)}, R.options().dtype(at::kFloat));
  for (int64_t b = 0; b < R.size(0); b += block_rows) {
    const int64_t e = std::min(R.size(0), b + block_rows);
    out.slice(0, b, e).copy_(R.slice(0, b, e).to(at::kDouble).matmul(W));
  }
  return out;
}

}  // namespace

std::vector<std::pair<int64_t, int64_t>> instruct_rows_of_added_tokens(const std::string& donor_dir,
                                                                       const data::Tokenizer& donor_tok,
                                                                       int64_t donor_rows,
                                                                       const std::string& instruct_dir,
                                                                       const data::Tokenizer& inst_tok,
                                                                       int64_t inst_rows) {
  // The donor's added vocabulary: its tokenizer's special tokens and those only its
  // tokenizer_config.json names (get_added_vocab() covers both).
  std::map<int64_t, std::string> added;
  for (int32_t id = 0; id < donor_tok.vocab_size() && id < donor_rows; ++id)
    if (donor_tok.is_special(id)) added[id] = donor_tok.piece(id);
  for (const auto& [id, text] : data::configured_added_tokens(donor_dir))
    if (id >= 0 && id < donor_rows) added[id] = text;
  std::map<std::string, int32_t> inst_configured;
  for (const auto& [id, text] : data::configured_added_tokens(instruct_dir)) inst_configured[text] = id;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& [id, text] : added) {
    // tokenizer_old.encode(tok, add_special_tokens=False) of length 1: the token itself where I
    // has it, else a text I happens to hold as one piece.
    int64_t twin = -1;
    if (const int32_t o = inst_tok.piece_to_id(text); o >= 0 && inst_tok.piece(o) == text) twin = o;
    else if (auto it = inst_configured.find(text); it != inst_configured.end()) twin = it->second;
    else if (const auto ids = inst_tok.encode(text, /*add_bos=*/false); ids.size() == 1) twin = ids[0];
    if (twin >= 0 && twin < inst_rows) out.emplace_back(id, twin);
  }
  return out;
}

PropagateReport propagate(const std::string& base, const std::string& instruct, const std::string& donor, Mode mode,
                          const std::string& out_dir, int64_t block_rows) {
  const data::Tokenizer base_tok(base), inst_tok(instruct), donor_tok(donor);
  const ModelFiles B = model_files(base), I = model_files(instruct), R = model_files(donor);
  // A tied model's H is its E: read once.
  const at::Tensor EB = B.E(), HB = B.tied ? EB : B.H(), EI = I.E(), HI = I.tied ? EI : I.H(), ER = R.E(),
                   HR = R.tied ? ER : R.H();
  const int64_t d = EB.size(1);
  for (auto* m : {&EI, &ER})
    if (m->size(1) != d)
      input_error("{} and {} are not of one base: embedding width {} against {}", base,
                  m == &EI ? instruct : donor, d, m->size(1));
  // The original vocabulary: B's tokenizer, whose ids mean the same in I.
  const int64_t shared = std::min<int64_t>(base_tok.vocab_size(), EB.size(0));
  if (EI.size(0) < shared)
    input_error("{}: {} embedding rows, fewer than the base's vocabulary of {}: not a fine-tune of {}", instruct,
                EI.size(0), shared, base);
  for (int32_t id : {0, shared > 1 ? int32_t(shared / 2) : 0, int32_t(shared - 1)})
    if (base_tok.piece(id) != inst_tok.piece(id))
      input_error("{}: token {} is `{}` here and `{}` in {}: the instruct model must keep the base's vocabulary",
                  instruct, id, inst_tok.piece(id), base_tok.piece(id), base);
  if (donor_tok.vocab_size() != ER.size(0))
    log::warn("{}: its tokenizer has {} tokens and its embeddings {} rows", donor, donor_tok.vocab_size(), ER.size(0));

  Averaging T;
  if (mode == Mode::Conversion) T = averaging(base_tok, donor_tok, shared);
  PropagateReport rep;
  rep.e = fit_one(mode, EB, EI, T, shared, block_rows);
  rep.h = fit_one(mode, HB, HI, T, shared, block_rows);
  if (mode == Mode::Swap)
    log::info("swap: W = identity");
  else
    log::info("{}: W for E fitted on {} rows (rank {}, relative residual {:.3e}); for H (rank {}, residual {:.3e})",
              mode_name(mode), mode == Mode::Conversion ? int64_t(T.rows.size()) : shared, rep.e.rank, rep.e.residual,
              rep.h.rank, rep.h.residual);

  // I's own tokens (chat tokens past the base vocabulary) go after the donor's, rows from I: those
  // of its tokenizer, and those only its tokenizer_config.json names (a SentencePiece instruct
  // model such as OpenChat keeps its chat tokens there, not in tokenizer.model). Rows past both
  // (padding of the embedding matrix) are no tokens and are dropped.
  const std::map<int32_t, std::string> configured = data::configured_added_tokens(instruct);
  std::vector<int32_t> own;
  std::vector<std::string> own_text;
  std::vector<bool> own_special;
  for (int32_t id = int32_t(shared); id < EI.size(0); ++id) {
    if (id < inst_tok.vocab_size()) {
      own.push_back(id);
      own_text.push_back(inst_tok.piece(id));
      own_special.push_back(inst_tok.is_special(id));
    } else if (auto it = configured.find(id); it != configured.end()) {
      own.push_back(id);
      own_text.push_back(it->second);
      own_special.push_back(true);
    }
  }
  std::vector<at::Tensor> E_parts{apply(ER, rep.e.W, block_rows)}, H_parts{apply(HR, rep.h.W, block_rows)};
  // The donor's added and special tokens (LLaMA-3's <|eot_id|>, <|start_header_id|>, SentencePiece's
  // <s> and </s>) take I's rows, as the official init_added_toks does: their base rows were never
  // trained for chat, and propagated through W they would not end a turn the way I learned to.
  const auto twins = instruct_rows_of_added_tokens(donor, donor_tok, int64_t(ER.size(0)), instruct, inst_tok,
                                                   int64_t(EI.size(0)));
  if (!twins.empty()) {
    std::vector<int64_t> to, from;
    for (const auto& [d_id, i_id] : twins) to.push_back(d_id), from.push_back(i_id);
    const at::Tensor to_t = at::tensor(to, at::kLong), from_t = at::tensor(from, at::kLong);
    E_parts[0].index_copy_(0, to_t, EI.index_select(0, from_t).to(at::kFloat));
    H_parts[0].index_copy_(0, to_t, HI.index_select(0, from_t).to(at::kFloat));
  }
  rep.from_instruct = int64_t(twins.size());
  if (!own.empty()) {
    at::Tensor idx = at::tensor(std::vector<int64_t>(own.begin(), own.end()), at::kLong);
    E_parts.push_back(EI.index_select(0, idx).to(at::kFloat));
    H_parts.push_back(HI.index_select(0, idx).to(at::kFloat));
  }
  // No second copy of the donor-sized matrices when nothing is appended (at 7-8B each is GiBs).
  const at::Tensor E = E_parts.size() == 1 ? E_parts[0] : at::cat(E_parts);
  const at::Tensor H = H_parts.size() == 1 ? H_parts[0] : at::cat(H_parts);
  E_parts.clear();
  H_parts.clear();
  rep.rows = E.size(0);
  rep.appended = int64_t(own.size());

  fs::create_directories(out_dir);
  write_model(I, E, H, inst_tok, donor_tok, out_dir);
  if (!own.empty() && donor_tok.kind() == "bpe") {
    // The donor's tokenizer.json with I's own tokens appended as added tokens at their new ids.
    const fs::path tok_path = fs::path(out_dir) / "tokenizer.json";
    json tj = json::parse(read_file(tok_path.string()));
    int64_t next = ER.size(0);
    for (size_t k = 0; k < own.size(); ++k)
      tj["added_tokens"].push_back({{"id", next++}, {"content", own_text[k]}, {"single_word", false},
                                    {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                    {"special", bool(own_special[k])}});
    write_file_atomic(tok_path.string(), tj.dump() + "\n");
  } else if (!own.empty()) {
    // A SentencePiece donor: the tokens appended to its model as control pieces, whose ids are
    // the rows appended above only when the donor's tokenizer covers exactly its embedding rows.
    if (donor_tok.vocab_size() != ER.size(0))
      input_error("{}: its tokenizer has {} pieces and its embeddings {} rows, so {}'s {} own tokens cannot be "
                  "appended at matching ids",
                  donor, donor_tok.vocab_size(), ER.size(0), instruct, own.size());
    const fs::path model_path = fs::path(out_dir) / "tokenizer.model";
    const std::string proto = data::append_control_pieces(read_file(model_path.string()), own_text);
    write_file_atomic(model_path.string(), proto);
    write_file_atomic((fs::path(out_dir) / "tokenizer.json").string(),
                      data::sentencepiece_tokenizer_json(proto, model_path.string()));
  }
  // I's tokenizer configuration (its chat template above all), with ids renumbered for the output.
  const fs::path inst_config = fs::path(instruct) / "tokenizer_config.json";
  if (fs::exists(inst_config)) {
    const data::Tokenizer out_tok(out_dir);
    write_file_atomic((fs::path(out_dir) / "tokenizer_config.json").string(),
                      data::adapt_tokenizer_config(read_file(inst_config.string()), out_tok));
  }
  return rep;
}

}  // namespace kiln::lep
