// LEP step 4 (../shared/METHODS.md section 3): carry the donor's learned embeddings into an
// instruction-tuned model of the same base without training it. Every layer and norm of the
// instruct model I stays; its input embeddings E and LM head H become the donor's rows times a d x d
// matrix W, fitted separately for E and for H by least squares in float64:
//   swap        W = identity;
//   overlap     W = argmin ||E_B[C] W - E_I[C]|| over C, the original vocabulary (shared by B and I);
//   conversion  W = argmin ||(T E_B) W - (T E_I)|| with T the averaging matrix of step 2 (lep_init.h),
//               applied row by row, never factored out.
// I's own added (chat) tokens are appended after the donor's vocabulary with their rows from I, and
// every added or special token of the donor's vocabulary that I has takes I's rows too (the
// official ruadapt init_added_toks: LLaMA-3's <|eot_id|> must keep what the instruct model learned).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::data {
class Tokenizer;
}

namespace kiln::lep {

// argmin_W ||X W - Y||_F for X [n, d] and Y [n, k] given as row blocks: block(begin, end) returns
// the float64 rows [begin, end) of X and of Y. A QR of the stacked R factor and each block in turn
// (TSQR), so memory is (d + block_rows) x d whatever n is; then the d x d system is solved with
// LAPACK's gelsy (as torch.linalg.lstsq), which also takes a rank-deficient X. `residual`:
// ||X W - Y||_F / ||Y||_F, from a second pass over the blocks.
struct LstsqFit {
  at::Tensor W;          // [d, k] float64
  double residual = 0;
  int64_t rank = 0;      // the numerical rank gelsy found
};
using RowBlock = std::function<std::pair<at::Tensor, at::Tensor>(int64_t begin, int64_t end)>;
LstsqFit lstsq_blockwise(int64_t n, int64_t d, const RowBlock& block, int64_t block_rows = 4096);

enum class Mode { Swap, Overlap, Conversion };
Mode mode_from(const std::string& name);  // swap | overlap | conversion; InputError otherwise

struct PropagateReport {
  LstsqFit e, h;              // W and fit of each (identity with residual 0 for swap)
  int64_t rows = 0;           // the output vocabulary
  int64_t appended = 0;       // I's own tokens appended after the donor's vocabulary
  int64_t from_instruct = 0;  // the donor's added / special tokens given I's rows
};

// (donor id, I's id) for each added or special token of the donor's vocabulary (its tokenizer's
// specials and its tokenizer_config.json's added_tokens_decoder, ids below donor_rows) that I's
// tokenizer gives one id below inst_rows: the same token, or a text I encodes to a single piece.
std::vector<std::pair<int64_t, int64_t>> instruct_rows_of_added_tokens(const std::string& donor_dir,
                                                                       const data::Tokenizer& donor_tok,
                                                                       int64_t donor_rows,
                                                                       const std::string& instruct_dir,
                                                                       const data::Tokenizer& inst_tok,
                                                                       int64_t inst_rows);

// Writes into the new folder `out_dir`: I's folder with E and H replaced (I's dtype), config.json
// with the output vocab_size and untied embeddings, the donor's tokenizer (plus I's own tokens for a
// tokenizer.json donor). base, instruct, donor: Hugging Face model folders.
PropagateReport propagate(const std::string& base, const std::string& instruct, const std::string& donor, Mode mode,
                          const std::string& out_dir, int64_t block_rows = 4096);

}  // namespace kiln::lep
