#include "model/lm_loss.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "core/error.h"
#include "model/autocast_state.h"

namespace kiln::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The LM head as plain tensors (LinearImpl::forward's arithmetic, without dropout): the weight
// (lm_head's, or the embeddings when tied) and, when the head carries an unmerged LoRA adapter,
// its A and B.
struct Head {
  at::Tensor w, a, b;
  double scaling = 0;
};

at::Tensor head_logits(const Head& h, const at::Tensor& x) {
  at::Tensor y = at::linear(x, h.w);
  if (h.a.defined()) {
    at::Tensor d = at::linear(at::linear(x.to(h.a.scalar_type()), h.a), h.b) * h.scaling;
    y = y + (d.scalar_type() == y.scalar_type() ? d : d.to(y.scalar_type()));
  }
  return y;
}

at::Tensor chunk_loss(const Head& h, const at::Tensor& x, const at::Tensor& labels, int64_t ignore) {
  return at::cross_entropy_loss(head_logits(h, x).to(at::kFloat), labels, {}, at::Reduction::Sum, ignore);
}

// Forward: the summed loss, one chunk of logits alive at a time. Backward: each chunk again, its
// gradients taken with respect to detached copies of the inputs (leaves without the parameters'
// hooks) and summed; the parameters' sums are this function's gradients, so each parameter's
// gradient reaches it, and its hook (bucketed all-reduce), once, as without chunking.
struct ChunkedHeadLoss : public torch::autograd::Function<ChunkedHeadLoss> {
  static variable_list forward(AutogradContext* ctx, at::Tensor x, at::Tensor labels, at::Tensor w, at::Tensor a,
                               at::Tensor b, double scaling, int64_t chunk, int64_t ignore) {
    ctx->saved_data["scaling"] = scaling;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["ignore"] = ignore;
    ctx->saved_data["autocast"] = autocast_enabled(c10::DeviceType::CUDA);
    ctx->saved_data["autocast_cpu"] = autocast_enabled(c10::DeviceType::CPU);
    // Without an adapter, a and b are empty placeholders (a custom function's inputs must be defined).
    const bool lora = a.numel() > 0;
    ctx->saved_data["lora"] = lora;
    ctx->save_for_backward({x, labels, w, a, b});
    const Head h{w, lora ? a : at::Tensor(), lora ? b : at::Tensor(), scaling};
    at::Tensor sum = at::zeros({}, x.options().dtype(at::kFloat));
    for (int64_t s = 0; s < x.size(0); s += chunk) {
      const int64_t n = std::min(chunk, x.size(0) - s);
      sum += chunk_loss(h, x.narrow(0, s, n), labels.narrow(0, s, n), ignore);
    }
    return {sum};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &labels = saved[1];
    const int64_t chunk = ctx->saved_data["chunk"].toInt(), ignore = ctx->saved_data["ignore"].toInt();
    // Which inputs want a gradient, and leaves standing in for them in the recomputation.
    const bool need[5] = {ctx->needs_input_grad(0), false, ctx->needs_input_grad(2), ctx->needs_input_grad(3),
                          ctx->needs_input_grad(4)};
    auto leaf = [](const at::Tensor& t, bool grad) { return t.defined() ? t.detach().requires_grad_(grad) : t; };
    const bool lora = ctx->saved_data["lora"].toBool();
    Head h{leaf(saved[2], need[2]), lora ? leaf(saved[3], need[3]) : at::Tensor(),
           lora ? leaf(saved[4], need[4]) : at::Tensor(), ctx->saved_data["scaling"].toDouble()};
    at::Tensor dx = need[0] ? at::empty_like(x) : at::Tensor();
    at::Tensor dw, da, db;

    const bool ac = autocast_enabled(c10::DeviceType::CUDA), ac_cpu = autocast_enabled(c10::DeviceType::CPU);
    set_autocast_enabled(c10::DeviceType::CUDA, ctx->saved_data["autocast"].toBool());
    set_autocast_enabled(c10::DeviceType::CPU, ctx->saved_data["autocast_cpu"].toBool());
    // As in the checkpointed layers: no autocast weight cache here, or copies made in backward would
    // outlive the step's cache and be used after the optimizer changed the weights.
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    {
      at::AutoGradMode grad_on(true);
      for (int64_t s = 0; s < x.size(0); s += chunk) {
        const int64_t n = std::min(chunk, x.size(0) - s);
        at::Tensor xc = x.narrow(0, s, n).detach().requires_grad_(need[0]);
        at::Tensor loss = chunk_loss(h, xc, labels.narrow(0, s, n), ignore);
        std::vector<at::Tensor> inputs;
        if (need[0]) inputs.push_back(xc);
        if (need[2]) inputs.push_back(h.w);
        if (need[3] && lora) inputs.push_back(h.a);
        if (need[4] && lora) inputs.push_back(h.b);
        if (inputs.empty()) break;
        auto g = torch::autograd::grad({loss}, inputs, {grad_out[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
        size_t k = 0;
        auto add = [&](at::Tensor& acc, const at::Tensor& gi) {
          if (!gi.defined()) return;
          acc = acc.defined() ? acc.add_(gi) : gi;
        };
        if (need[0]) {
          if (g[k].defined())
            dx.narrow(0, s, n).copy_(g[k]);
          else
            dx.narrow(0, s, n).zero_();
          ++k;
        }
        if (need[2]) add(dw, g[k++]);
        if (need[3] && lora) add(da, g[k++]);
        if (need[4] && lora) add(db, g[k++]);
      }
    }
    at::autocast::set_autocast_cache_enabled(cache);
    set_autocast_enabled(c10::DeviceType::CUDA, ac);
    set_autocast_enabled(c10::DeviceType::CPU, ac_cpu);
    // x, labels, w, a, b, then scaling, chunk, ignore: no gradients.
    return {dx, at::Tensor(), dw, da, db, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

Head head_of(Llama& m) {
  Head h;
  if (m->lm_head.is_empty()) {
    h.w = m->model->embed_tokens->weight;
    return h;
  }
  LinearImpl& l = *m->lm_head;
  h.w = l.weight;
  if (l.has_lora() && !l.merged()) {
    h.a = l.lora_A->weight;
    h.b = l.lora_B->weight;
    h.scaling = l.lora_scaling;
  }
  return h;
}

}  // namespace

// 64 MiB: larger chunks measured no faster on CPU, and the heap (core/host_memory.h keeps freed
// memory) fragments around buffers this size: with 256 MiB chunks the peak of the 128,256-token
// benchmark (bench/lm_head_memory.sh) was 4.9 GB, with 64 MiB 2.6 GB.
int64_t auto_chunk_rows(int64_t vocab) { return std::max<int64_t>(64, (int64_t(64) << 20) / (4 * std::max<int64_t>(1, vocab))); }

LmLoss lm_loss(Llama& m, const at::Tensor& hidden, const at::Tensor& labels, int64_t ignore, int64_t chunk_rows,
               bool row_stats) {
  LmLoss out;
  const int64_t B = hidden.size(0), T = hidden.size(1), H = hidden.size(2);
  if (chunk_rows <= 0) {
    at::Tensor logits = m->logits(hidden).to(at::kFloat);  // [B, T, V]
    out.sum = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), {},
                                     at::Reduction::Sum, ignore);
    at::Tensor mask = labels.ne(ignore);
    if (row_stats) {
      out.correct_per_row = (logits.argmax(-1).eq(labels) & mask).sum(1).to(at::kCPU);
      out.targets_per_row = mask.sum(1).to(at::kCPU);
    }
    out.targets = mask.sum().item<int64_t>();
    return out;
  }
  // The positions with a target; the others never reach the head.
  at::Tensor flat_labels = labels.reshape({-1});
  at::Tensor idx = flat_labels.ne(ignore).nonzero().squeeze(1);
  out.targets = idx.size(0);
  at::Tensor x = hidden.reshape({-1, H}).index_select(0, idx);
  at::Tensor y = flat_labels.index_select(0, idx);
  const Head head = head_of(m);
  // LoRA dropout on the head would need the masks of the forward pass again: the one case computed
  // in one piece, with autograd's own graph.
  const bool dropout = m->lm_head.is_empty() ? false : (m->lm_head->lora_dropout > 0 && m->lm_head->is_training());
  if (row_stats || !at::GradMode::is_enabled() || out.targets <= chunk_rows || dropout) {
    // No backward to save memory for (evaluation), or one chunk: plain autograd over the rows.
    at::Tensor sum = at::zeros({}, hidden.options().dtype(at::kFloat));
    at::Tensor correct = row_stats ? at::zeros({out.targets}, idx.options().dtype(at::kBool)) : at::Tensor();
    const int64_t step = (out.targets <= chunk_rows || dropout) ? std::max<int64_t>(1, out.targets) : chunk_rows;
    for (int64_t s = 0; s < out.targets; s += step) {
      const int64_t n = std::min(step, out.targets - s);
      at::Tensor logits = (dropout ? m->logits(x.narrow(0, s, n)) : head_logits(head, x.narrow(0, s, n))).to(at::kFloat);
      at::Tensor yc = y.narrow(0, s, n);
      sum = sum + at::cross_entropy_loss(logits, yc, {}, at::Reduction::Sum, ignore);
      if (row_stats) correct.narrow(0, s, n).copy_(logits.argmax(-1).eq(yc));
    }
    out.sum = sum;
    if (row_stats) {
      at::Tensor row = idx.div(T, "floor");
      auto count = [&](const at::Tensor& what) {
        return at::zeros({B}, idx.options()).index_add_(0, row, what.to(idx.scalar_type())).to(at::kCPU);
      };
      out.correct_per_row = count(correct);
      out.targets_per_row = count(at::ones({out.targets}, idx.options()));
    }
    return out;
  }
  const at::Tensor none = at::empty({0}, x.options());
  out.sum = ChunkedHeadLoss::apply(x, y, head.w, head.a.defined() ? head.a : none, head.b.defined() ? head.b : none,
                                   head.scaling, chunk_rows, ignore)[0];
  return out;
}

}  // namespace kiln::model
