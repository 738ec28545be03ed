#include "data/collate.h"

#include "core/config.h"
#include "core/error.h"
#include "data/store.h"

namespace kiln::data {

CollateOptions collate_options(const DataConfig& c, const Store& s) {
  CollateOptions o;
  o.max_len = c.max_len;
  o.truncation = c.truncation;
  o.padding_side = c.padding_side;
  o.pad_id = s.meta().pad_id;
  return o;
}

const at::Tensor& Batch::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it != tensors.end()) return it->second;
  std::string have;
  for (auto& [k, v] : tensors) have += (have.empty() ? "" : ", ") + k;
  throw InternalError(fmt::format("batch has no tensor `{}` (it has: {})", name, have));
}

void Batch::to(c10::Device device) {
  for (auto& [k, t] : tensors)
    if (t.defined() && t.device() != device) t = t.to(device);
}

namespace {

at::ScalarType batch_type(DType t) {
  switch (t) {
    case DType::i32:
    case DType::i64: return at::kLong;
    case DType::u8: return at::kBool;
    case DType::f32: return at::kFloat;
  }
  return at::kLong;
}

// Copies a store view into row b of a [B, T] tensor at positions start + k, k < n, reading source
// position pos(k); or into element b of a [B] tensor.
template <typename T, typename Pos>
void fill_row(at::Tensor& out, int64_t b, int64_t start, int64_t n, const View<T>& src, Pos pos) {
  switch (out.scalar_type()) {
    case at::kLong: {
      auto a = out.accessor<int64_t, 2>();
      for (int64_t k = 0; k < n; ++k) a[b][start + k] = int64_t(src[pos(k)]);
      break;
    }
    case at::kBool: {
      auto a = out.accessor<bool, 2>();
      for (int64_t k = 0; k < n; ++k) a[b][start + k] = src[pos(k)] != 0;
      break;
    }
    default: {
      auto a = out.accessor<float, 2>();
      for (int64_t k = 0; k < n; ++k) a[b][start + k] = float(src[pos(k)]);
    }
  }
}

template <typename T>
void fill_scalar(at::Tensor& out, int64_t b, T v) {
  switch (out.scalar_type()) {
    case at::kLong: out.accessor<int64_t, 1>()[b] = int64_t(v); break;
    case at::kBool: out.accessor<bool, 1>()[b] = v != 0; break;
    default: out.accessor<float, 1>()[b] = float(v);
  }
}

}  // namespace

Batch collate(const Store& store, const std::vector<int64_t>& indices, const CollateOptions& o) {
  const int64_t B = int64_t(indices.size());
  const int32_t bos = store.meta().bos_id;
  // The window [from, from + len) of each example that survives truncation.
  std::vector<int64_t> from(static_cast<size_t>(B)), len(static_cast<size_t>(B));
  std::vector<char> bos_kept(size_t(B), 0);
  int64_t T = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t i = indices[size_t(b)];
    if (i < 0 || i >= store.size()) throw InternalError(fmt::format("collate: index {} of {}", i, store.size()));
    int64_t n = store.length(i);
    from[size_t(b)] = 0;
    if (o.max_len > 0 && n > o.max_len) {
      if (o.truncation == "error")
        input_error("{}: example {} (source line {}) has {} tokens, more than data.max_len = {} (data.truncation: error)",
                    store.path(), i, store.source_line(i), n, o.max_len);
      // left: drop the tokens after the BOS (the BOS stays at position 0).
      if (o.truncation == "left") {
        from[size_t(b)] = n - o.max_len;
        bos_kept[size_t(b)] = store.ids(i)[0] == bos;
      }
      n = o.max_len;
    }
    len[size_t(b)] = n;
    T = std::max(T, n);
  }
  if (o.pad_to_multiple_of > 1) T = (T + o.pad_to_multiple_of - 1) / o.pad_to_multiple_of * o.pad_to_multiple_of;

  auto i64 = at::TensorOptions().dtype(at::kLong);
  Batch batch;
  at::Tensor input_ids = at::full({B, T}, int64_t(o.pad_id), i64);
  at::Tensor attention_mask = at::zeros({B, T}, i64);
  at::Tensor example_index = at::empty({B}, i64);
  at::Tensor lengths = at::empty({B}, i64);
  const auto& columns = store.data().columns;
  std::vector<at::Tensor> outs(columns.size());
  for (size_t c = 0; c < columns.size(); ++c) {
    const Field& f = columns[c].field;
    auto opts = at::TensorOptions().dtype(batch_type(f.dtype));
    if (f.per == Per::token) outs[c] = at::full({B, T}, f.pad, opts);
    if (f.per == Per::example) outs[c] = at::empty({B}, opts);
  }

  auto ids = input_ids.accessor<int64_t, 2>();
  auto am = attention_mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t i = indices[size_t(b)], n = len[size_t(b)];
    int64_t start = o.padding_side == "left" ? T - n : 0;
    example_index[b] = i;
    lengths[b] = n;
    // Source position of output token k.
    int64_t skip = from[size_t(b)];
    bool kept = bos_kept[size_t(b)];
    auto pos = [&](int64_t k) { return kept && k == 0 ? int64_t(0) : k + skip; };
    auto tok = store.ids(i);
    for (int64_t k = 0; k < n; ++k) {
      ids[b][start + k] = tok[pos(k)];
      am[b][start + k] = 1;
    }
    for (size_t c = 0; c < columns.size(); ++c) {
      const Field& f = columns[c].field;
      if (f.per == Per::ragged) continue;
      std::visit(
          [&](const auto& vec) {
            using V = typename std::decay_t<decltype(vec)>::value_type;
            View<V> v = store.get<V>(f.name, i);
            if (f.per == Per::token)
              fill_row(outs[c], b, start, n, v, pos);
            else
              fill_scalar(outs[c], b, v[0]);
          },
          columns[c].values);
    }
  }
  batch["input_ids"] = input_ids;
  batch["attention_mask"] = attention_mask;
  batch["example_index"] = example_index;
  batch["lengths"] = lengths;
  for (size_t c = 0; c < columns.size(); ++c)
    if (outs[c].defined()) batch[columns[c].field.name] = outs[c];
  return batch;
}

}  // namespace kiln::data
