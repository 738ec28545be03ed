// LEP step 4 (../shared/METHODS.md section 3): carry the donor's learned embeddings into an
// instruction-tuned model of the same base without training it. Every layer and norm of the
// instruct model I stays; its input embeddings E and LM head H become the donor's rows times a d x d
// matrix W, fitted separately for E and for H by least squares in float64:
//   swap        W = identity;
//   overlap     W = argmin ||E_B[C] W - E_I[C]|| over C, the original vocabulary (shared by B and I);
//   conversion  W = argmin ||(T E_B) W - (T E_I)|| with T the averaging matrix of step 2 (lep_init.h),
//               applied row by row, never factored out.
// I's own added (chat) tokens are appended after the donor's vocabulary with their rows from I.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

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
};

// Writes into the new folder `out_dir`: I's folder with E and H replaced (I's dtype), config.json
// with the output vocab_size and untied embeddings, the donor's tokenizer (plus I's own tokens for a
// tokenizer.json donor). base, instruct, donor: Hugging Face model folders.
PropagateReport propagate(const std::string& base, const std::string& instruct, const std::string& donor, Mode mode,
                          const std::string& out_dir, int64_t block_rows = 4096);

}  // namespace kiln::lep
