#include "train/memory_plan.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "model/hf_config.h"

#ifdef KILN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kiln::train {

namespace {

double dtype_bytes(const std::string& d) { return d == "float32" || d == "fp32" || d == "float" ? 4.0 : 2.0; }

// Bytes of host memory: MemTotal from /proc/meminfo (sysconf where it is missing).
double host_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (f >> key >> kb) {
    if (key == "MemTotal:") return kb * 1024.0;
    f.ignore(256, '\n');
  }
  return double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
}

std::string gib(double b) { return fmt::format("{:.2f} GiB", b / double(1ull << 30)); }

}  // namespace

MemoryPlan plan_memory(const Recipe& r, const model::LlamaConfig& c, int world_size, int local_size, c10::Device dev) {
  MemoryPlan p;
  const int64_t h = c.hidden_size, I = c.intermediate_size, L = c.num_hidden_layers, V = c.vocab_size;
  const int64_t hd = c.dim_per_head(), q_out = c.num_attention_heads * hd, kv_out = c.num_key_value_heads * hd;
  // Per decoder layer: the seven projections and two norms; then embeddings, the final norm, the head.
  struct Proj {
    const char* name;
    int64_t in, out;
  };
  const Proj projs[] = {{"q_proj", h, q_out},  {"k_proj", h, kv_out}, {"v_proj", h, kv_out}, {"o_proj", q_out, h},
                        {"gate_proj", h, I},   {"up_proj", h, I},     {"down_proj", I, h}};
  int64_t layer = 2 * h;
  for (const auto& pr : projs) layer += pr.in * pr.out;
  const int64_t embed = V * h, head = c.tie_word_embeddings ? 0 : V * h;
  p.parameters = L * layer + embed + head + h;

  // Parameters of whole modules named in model.freeze or lora.extra_trainable, each counted once,
  // a tied lm_head as embed_tokens (as apply_lora reads them). Only the embeddings, head and final
  // norm are counted: a frozen layer or projection counts as trained, so the plan errs high.
  auto whole_modules = [&](const std::vector<std::string>& names) {
    std::set<std::string> seen;
    for (const auto& m : names) seen.insert(m == "lm_head" && c.tie_word_embeddings ? "embed_tokens" : m);
    int64_t n = 0;
    for (const auto& m : seen) n += m == "embed_tokens" ? embed : m == "lm_head" ? head : m == "norm" ? h : 0;
    return n;
  };
  const double e = dtype_bytes(r.model.dtype);
  if (!r.lora.enabled) {
    p.trainable = p.parameters - whole_modules(r.model.freeze);
    p.weights = double(p.parameters) * e;
    p.gradients = double(p.trainable) * e;
  } else {
    std::set<std::string> targets(r.lora.target_modules.begin(), r.lora.target_modules.end());
    int64_t lora = 0;
    for (const auto& pr : projs)
      if (targets.count(pr.name)) lora += r.lora.r * (pr.in + pr.out);
    lora *= L;
    const int64_t extra = whole_modules(r.lora.extra_trainable);  // trained beside LoRA (LEP: E and H)
    p.trainable = lora + extra;
    p.weights = double(p.parameters) * e + double(lora) * 4.0;  // LoRA matrices are float32
    p.gradients = double(lora) * 4.0 + double(extra) * e;
  }
  // AdamW's moments are float32 whatever the parameter dtype; ZeRO-1 keeps 1/N of them per rank.
  p.optimizer = 8.0 * double(p.trainable) / (r.dist.zero1 && world_size > 1 ? double(world_size) : 1.0);
  // Buckets hold gradients in their own dtype for the whole run; ZeRO-1 adds each rank's shard.
  if (world_size > 1) p.buckets = p.gradients * (1.0 + (r.dist.zero1 ? 1.0 / double(world_size) : 0.0));
  // Rank 0 gathers the moments bucket by bucket into host memory and copies the trainable weights.
  p.checkpoint = p.gradients + 8.0 * double(p.trainable);

  // Activations kept for backward, per token of one micro-batch. Per layer, as the model runs: the
  // layer input and the RMS norms' inputs, float32 intermediates and outputs (9h), q / k / v before
  // and after RoPE (2 q_out + 4 kv_out; o_proj's input q_out), the residual (h), and the MLP's gate,
  // up, activation and product (4I). Attention weights: on the CPU path float32 scores, scaled and
  // masked scores and probabilities (16 bytes x heads x T per token); with the fused kernels on GPU
  // only their row statistics. Autocast bf16 halves what is not float32. Checked against peak RSS
  // on CPU (docs/train.md).
  const bool bf16 = r.train.precision != "fp32";
  const double act = bf16 ? 2.0 : e;
  const double T = double(r.data.max_len), tokens = double(r.train.micro_batch) * T;
  const double attn = dev.is_cpu() ? 16.0 * double(c.num_attention_heads) * T : 4.0 * double(c.num_attention_heads);
  const double per_layer = act * double(9 * h + 3 * q_out + 4 * kv_out + h + 4 * I) + attn;
  const double full = tokens * double(L) * per_layer;
  // With checkpointing: each layer's input, plus one layer recomputed in full during backward.
  const double ckpt = tokens * (double(L) * act * double(h) + per_layer);
  p.activations = r.model.activation_checkpointing ? ckpt : full;
  p.activations_other = r.model.activation_checkpointing ? full : ckpt;
  // The language-model head: float32 logits and their gradient over the vocabulary (methods with a
  // label head instead need far less).
  p.logits = tokens * double(V) * 8.0;
  p.total = p.weights + p.gradients + p.optimizer + p.buckets + p.activations + p.logits +
            (dev.is_cpu() ? p.checkpoint : 0.0);

  if (dev.is_cuda()) {
#ifdef KILN_WITH_CUDA
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      p.available = double(total_b);
      p.device = fmt::format("{} GPU memory", dev.str());
    }
#endif
  } else {
    p.available = host_memory() / double(std::max(1, local_size));
    p.device = local_size > 1 ? fmt::format("host memory / {} ranks on this node", local_size) : "host memory";
  }
  return p;
}

std::string MemoryPlan::table(const Recipe& r, int world_size) const {
  std::ostringstream o;
  o << fmt::format("memory plan per rank ({} ranks; estimate, docs/train.md):\n", world_size);
  auto count = [](int64_t n) {
    return n >= 1000000000 ? fmt::format("{:.2f} B", double(n) / 1e9) : fmt::format("{:.3g} M", double(n) / 1e6);
  };
  o << fmt::format("  parameters   {:>12}  {} parameters in {}\n", gib(weights), count(parameters), r.model.dtype);
  o << fmt::format("  gradients    {:>12}  {} trainable ({})\n", gib(gradients), count(trainable),
                   r.lora.enabled ? "LoRA" : "full fine-tuning");
  o << fmt::format("  optimizer    {:>12}  AdamW moments in float32{}\n", gib(optimizer),
                   r.dist.zero1 && world_size > 1 ? fmt::format(", sharded over {} ranks (ZeRO-1)", world_size)
                                                  : ", not sharded");
  if (buckets > 0)
    o << fmt::format("  buckets      {:>12}  gradient buckets of the all-reduce{}\n", gib(buckets),
                     r.dist.zero1 ? " and this rank's reduced shard" : "");
  o << fmt::format("  checkpoint   {:>12}  rank 0's host copy of weights and optimizer state while saving{}\n",
                   gib(checkpoint), device.rfind("host", 0) == 0 ? "" : " (host memory, not in the total)");
  o << fmt::format("  activations  {:>12}  micro-batch {} x {} tokens, {} checkpointing ({} {})\n", gib(activations),
                   r.train.micro_batch, r.data.max_len, r.model.activation_checkpointing ? "with" : "without",
                   r.model.activation_checkpointing ? "without:" : "with:", gib(activations_other));
  o << fmt::format("  logits       {:>12}  float32 logits and gradient over the vocabulary\n", gib(logits));
  o << fmt::format("  total        {:>12}  of {} ({})", gib(total), available > 0 ? gib(available) : "unknown",
                   device.empty() ? "device memory unknown" : device);
  return o.str();
}

void check_memory_plan(const Recipe& r, int world_size, int local_size, c10::Device dev, bool root) {
  if (r.train.memory_check == "off") return;
  model::LlamaConfig c = model::LlamaConfig::from_file(r.model.path);
  MemoryPlan p = plan_memory(r, c, world_size, local_size, dev);
  if (root) log::info("{}", p.table(r, world_size));
  if (p.available <= 0 || p.total <= p.available) return;
  std::string hint = r.model.activation_checkpointing || p.activations_other >= p.activations
                         ? ""
                         : "; model.activation_checkpointing: true saves " + gib(p.activations - p.activations_other);
  std::string msg = fmt::format(
      "{}: this run needs about {} per rank and {} has {} (parameters {}, gradients {}, optimizer {}, buckets {}, "
      "activations {}, logits {}{}){}; a smaller train.micro_batch or data.max_len, LoRA, dist.zero1 or more ranks "
      "lower it (train.memory_check: warn runs it anyway)",
      r.file, gib(p.total), p.device, gib(p.available), gib(p.weights), gib(p.gradients), gib(p.optimizer),
      gib(p.buckets), gib(p.activations), gib(p.logits),
      dev.is_cpu() ? ", checkpoint copy " + gib(p.checkpoint) : std::string(), hint);
  if (r.train.memory_check == "warn") {
    if (root) log::warn("{}", msg);
    return;
  }
  input_error("{}", msg);
}

}  // namespace kiln::train
