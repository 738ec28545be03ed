#include "model/pooling.h"

#include <limits>

#include "core/error.h"

namespace kiln::model {

Pooling parse_pooling(const std::string& s, const std::string& where) {
  if (s == "last") return Pooling::last;
  if (s == "mean") return Pooling::mean;
  if (s == "max") return Pooling::max;
  input_error("{}: unknown pooling `{}` (expected last, mean or max)", where, shorten(s));
}

const char* pooling_name(Pooling p) {
  switch (p) {
    case Pooling::last: return "last";
    case Pooling::mean: return "mean";
    case Pooling::max: return "max";
  }
  return "?";
}

namespace {
void check_shapes(const at::Tensor& hidden, const at::Tensor& mask) {
  KILN_CHECK(hidden.dim() == 3, "pool: hidden states must be [B, T, H], got {} dims", hidden.dim());
  KILN_CHECK(mask.dim() == 2 && mask.size(0) == hidden.size(0) && mask.size(1) == hidden.size(1),
             "pool: mask [{}, {}] does not match hidden [{}, {}, {}]", mask.size(0), mask.dim() > 1 ? mask.size(1) : -1,
             hidden.size(0), hidden.size(1), hidden.size(2));
}
}  // namespace

at::Tensor last_token_index(const at::Tensor& mask) {
  KILN_CHECK(mask.dim() == 2, "last_token_index: mask must be [B, T], got {} dims", mask.dim());
  at::Tensor real = mask.ne(0);
  // The largest position holding a real token: position * is_real peaks there. Counting real tokens
  // (length - 1) would be wrong for left padding, and taking T - 1 wrong for right padding.
  at::Tensor pos = at::arange(mask.size(1), mask.options().dtype(at::kLong)).unsqueeze(0);
  at::Tensor idx = (pos * real.to(at::kLong)).amax(1);
  KILN_CHECK(real.any(1).all().item<bool>(), "pool: a row of the batch has no real token");
  return idx;
}

at::Tensor pool(const at::Tensor& hidden, const at::Tensor& mask, Pooling p) {
  check_shapes(hidden, mask);
  const int64_t B = hidden.size(0);
  switch (p) {
    case Pooling::last: {
      at::Tensor idx = last_token_index(mask);
      return hidden.index({at::arange(B, idx.options()), idx});
    }
    case Pooling::mean: {
      at::Tensor m = mask.ne(0).to(hidden.scalar_type()).unsqueeze(-1);  // [B, T, 1]
      at::Tensor count = mask.ne(0).sum(1, /*keepdim=*/true);             // [B, 1]
      KILN_CHECK(count.gt(0).all().item<bool>(), "pool: a row of the batch has no real token");
      return (hidden * m).sum(1) / count.to(hidden.scalar_type());
    }
    case Pooling::max: {
      at::Tensor pad = mask.eq(0).unsqueeze(-1);  // [B, T, 1]
      KILN_CHECK(mask.ne(0).any(1).all().item<bool>(), "pool: a row of the batch has no real token");
      // -inf on padding: it can never win, and the gradient flows only to the winning real token.
      return hidden.masked_fill(pad, -std::numeric_limits<double>::infinity()).amax(1);
    }
  }
  throw InternalError("pool: unknown mode");
}

}  // namespace kiln::model
