#include "data/collate.h"

#include "core/config.h"
#include "core/error.h"
#include "data/align.h"
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

Batch collate(const Store& store, const std::vector<int64_t>& indices, const CollateOptions& o) {
  const std::string& kind = store.kind();
  const int64_t B = int64_t(indices.size());
  const int32_t bos = store.meta().bos_id;
  // The window [from, to) of each example that survives truncation.
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
  batch.input_ids = at::full({B, T}, int64_t(o.pad_id), i64);
  batch.attention_mask = at::zeros({B, T}, i64);
  batch.example_index = at::empty({B}, i64);
  batch.lengths = at::empty({B}, i64);
  bool per_token = kind != "classification";
  batch.labels = per_token ? at::full({B, T}, int64_t(kIgnore), i64) : at::empty({B}, i64);
  if (kind == "lm") batch.loss_mask = at::zeros({B, T}, at::TensorOptions().dtype(at::kBool));
  if (kind == "token_classification") batch.word_ids = at::full({B, T}, int64_t(kNoWord), i64);

  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto am = batch.attention_mask.accessor<int64_t, 2>();
  auto lab1 = per_token ? at::TensorAccessor<int64_t, 1>(nullptr, nullptr, nullptr) : batch.labels.accessor<int64_t, 1>();
  int64_t targets = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t i = indices[size_t(b)], n = len[size_t(b)];
    int64_t start = o.padding_side == "left" ? T - n : 0;
    batch.example_index[b] = i;
    batch.lengths[b] = n;
    // Source position of output token k.
    int64_t skip = from[size_t(b)];
    bool kept = bos_kept[size_t(b)];
    auto pos = [&](int64_t k) { return kept && k == 0 ? int64_t(0) : k + skip; };
    auto tok = store.ids(i);
    for (int64_t k = 0; k < n; ++k) {
      ids[b][start + k] = tok[pos(k)];
      am[b][start + k] = 1;
    }
    if (kind == "classification") {
      lab1[b] = store.label(i);
      ++targets;
    } else if (kind == "token_classification") {
      auto tl = store.token_labels(i);
      auto wid = store.word_ids(i);
      auto lab = batch.labels.accessor<int64_t, 2>();
      auto w = batch.word_ids.accessor<int64_t, 2>();
      for (int64_t k = 0; k < n; ++k) {
        lab[b][start + k] = tl[pos(k)];
        w[b][start + k] = wid[pos(k)];
        targets += tl[pos(k)] != kIgnore;
      }
      // A word whose first sub-token was cut on the left keeps only ignored sub-tokens: as in preprocess.
    } else {
      auto lm = store.loss_mask(i);
      auto lab = batch.labels.accessor<int64_t, 2>();
      auto mask = batch.loss_mask.accessor<bool, 2>();
      for (int64_t k = 0; k < n; ++k) {
        bool on = lm[pos(k)] != 0;
        mask[b][start + k] = on;
        if (on) {
          lab[b][start + k] = tok[pos(k)];
          ++targets;
        }
      }
    }
  }
  batch.num_targets = targets;
  return batch;
}

}  // namespace kiln::data
