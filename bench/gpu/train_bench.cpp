// Training-step throughput of kiln's model and optimizer on one device: LoRA or full fine-tuning of a
// LLaMA-shaped model with random weights, bf16 weights and bf16 autocast as `kiln train` runs with
// model.dtype: bfloat16 and train.precision: bf16, AdamW with gradient clipping. Prints tokens/s,
// MFU and peak device memory; bench/gpu/run.sh runs the shapes and docs/building.md has the figures.
//   bench_train --shape llama3-1b --mode lora --batch 8 --seq 2048 --steps 5
// MFU counts model FLOPs as PaLM does (no recompute, attention over the whole sequence):
//   full: 6 N + 12 L T d per token; LoRA: 4 N + 6 N_lora + 12 L T d (the frozen weights get no
//   weight gradient), N = the parameters of every matrix product (the embedding lookup excluded).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/config.h"
#include "core/host_memory.h"
#include "model/lora.h"
#include "train/autocast.h"
#include "train/optimizer.h"
#ifdef KILN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

using namespace kiln::model;
using Clock = std::chrono::steady_clock;

namespace {

// Shapes of published models (their config.json), random weights.
std::string shape_json(const std::string& shape) {
  if (shape == "llama3-1b")  // Llama-3.2-1B
    return R"({"vocab_size":128256,"hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,
               "num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000,
               "tie_word_embeddings":true,"max_position_embeddings":8192})";
  if (shape == "llama3-8b")  // Meta-Llama-3-8B
    return R"({"vocab_size":128256,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,
               "num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000,
               "tie_word_embeddings":false,"max_position_embeddings":8192})";
  if (shape == "llama2-7b")  // Llama-2-7b
    return R"({"vocab_size":32000,"hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,
               "num_attention_heads":32,"num_key_value_heads":32,"rms_norm_eps":1e-5,
               "tie_word_embeddings":false,"max_position_embeddings":4096})";
  if (shape == "tiny")  // for a smoke run on CPU
    return R"({"vocab_size":512,"hidden_size":64,"intermediate_size":172,"num_hidden_layers":2,
               "num_attention_heads":8,"num_key_value_heads":4,"rms_norm_eps":1e-5,
               "tie_word_embeddings":true,"max_position_embeddings":1024})";
  std::fprintf(stderr, "unknown --shape %s (llama3-1b | llama3-8b | llama2-7b | tiny)\n", shape.c_str());
  std::exit(2);
}

// Dense bf16 tensor-core peak of the device, FLOP/s; 0 when unknown (MFU then not printed).
double peak_flops(const std::string& name) {
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) return 989.4e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0;
}

void sync(const c10::Device& d) {
#ifdef KILN_WITH_CUDA
  if (d.is_cuda()) cudaDeviceSynchronize();
#endif
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "llama3-1b", mode = "lora", device_name = "cuda";
  int batch = 4, seq = 2048, steps = 5, warmup = 2, rank = 16;
  bool ckpt = false, phases = false;
  double peak = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--shape") shape = next();
    else if (a == "--mode") mode = next();
    else if (a == "--device") device_name = next();
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--seq") seq = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--rank") rank = std::stoi(next());
    else if (a == "--checkpointing") ckpt = true;
    else if (a == "--phases") phases = true;  // time forward, backward and optimizer apart (synchronises)
    else if (a == "--peak-tflops") peak = std::stod(next()) * 1e12;
    else {
      std::fprintf(stderr,
                   "usage: bench_train [--shape llama3-1b|llama3-8b|llama2-7b|tiny] [--mode lora|full] "
                   "[--device cuda|cpu] [--batch B] [--seq T] [--steps S] [--warmup W] [--rank R] "
                   "[--checkpointing] [--phases] [--peak-tflops P]\n");
      return 2;
    }
  }
  if (mode != "lora" && mode != "full") {
    std::fprintf(stderr, "--mode %s: lora or full\n", mode.c_str());
    return 2;
  }
  kiln::tune_host_allocator();
  at::manual_seed(0);
  const c10::Device dev(device_name);
  std::string gpu = "cpu";
#ifdef KILN_WITH_CUDA
  if (dev.is_cuda()) {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, dev.has_index() ? dev.index() : 0);
    gpu = prop.name;
  }
#endif
  if (peak < 0) peak = dev.is_cuda() ? peak_flops(gpu) : 0;

  LlamaConfig cfg = LlamaConfig::from_json_text(shape_json(shape), shape);
  Llama m(cfg, at::kBFloat16, dev);
  m->init_weights(0.02);
  if (mode == "lora") {
    kiln::LoraConfig lc;
    lc.r = rank;
    lc.alpha = 2.0 * rank;
    lc.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    apply_lora(m, lc, {});
  }
  m->set_activation_checkpointing(ckpt);
  m->train();

  int64_t n_matmul = 0, n_lora = 0, n_train = 0;
  std::vector<kiln::train::AdamW::Param> params;
  for (auto& p : m->named_parameters()) {
    const std::string& name = p.key();
    const bool lora = is_lora_param(name);
    if (lora) n_lora += p.value().numel();
    else if (name.find("embed_tokens") == std::string::npos || cfg.tie_word_embeddings) n_matmul += p.value().numel();
    if (mode == "full" && !lora) p.value().set_requires_grad(true);
    if (p.value().requires_grad()) {
      n_train += p.value().numel();
      const bool decay = p.value().dim() >= 2 && name.find("norm") == std::string::npos;
      params.push_back({name, p.value(), decay});
    }
  }
  kiln::train::AdamWOptions o;
  o.weight_decay = 0.01;
  kiln::train::AdamW opt(std::move(params), o);

  const int64_t V = cfg.vocab_size;
  at::Tensor ids = at::randint(3, V, {batch, seq + 1}, at::TensorOptions().dtype(at::kLong).device(dev));
  double t_fwd = 0, t_bwd = 0, t_opt = 0;
  auto lap = [&](double& acc, Clock::time_point& since) {
    if (!phases) return;
    sync(dev);
    auto now = Clock::now();
    acc += std::chrono::duration<double>(now - since).count();
    since = now;
  };
  auto step = [&] {
    auto since = Clock::now();
    m->zero_grad();
    at::Tensor loss;
    {
      kiln::train::Autocast ac(true, dev);  // as the trainer runs train.precision: bf16
      at::Tensor logits = m->forward(ids.narrow(1, 0, seq));
      loss = at::cross_entropy_loss(logits.reshape({-1, V}).to(at::kFloat), ids.narrow(1, 1, seq).reshape({-1}));
    }
    lap(t_fwd, since);
    loss.backward();
    lap(t_bwd, since);
    opt.step(1e-5, 1.0);
    lap(t_opt, since);
  };
  for (int i = 0; i < warmup; ++i) step();
  t_fwd = t_bwd = t_opt = 0;
  sync(dev);
#ifdef KILN_WITH_CUDA
  if (dev.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(dev.has_index() ? dev.index() : 0);
#endif
  auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  sync(dev);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  double peak_gib = 0;
#ifdef KILN_WITH_CUDA
  if (dev.is_cuda()) {
    auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(dev.has_index() ? dev.index() : 0);
    peak_gib = double(st.allocated_bytes[0].peak) / (1 << 30);
  }
#endif
  const double tokens_per_s = double(batch) * seq * steps / s;
  const double L = cfg.num_hidden_layers, d = cfg.hidden_size;
  const double per_token = (mode == "full" ? 6.0 * n_matmul : 4.0 * n_matmul + 6.0 * n_lora) + 12.0 * L * seq * d;
  std::printf("kiln bench_train device=%s shape=%s params=%.3fB trainable=%.1fM mode=%s batch=%d seq=%d "
              "ckpt=%d steps=%d step_s=%.3f tokens_per_s=%.0f model_tflops=%.1f",
              gpu.c_str(), shape.c_str(), (n_matmul + (cfg.tie_word_embeddings ? 0 : V * d)) / 1e9, n_train / 1e6,
              mode.c_str(), batch, seq, int(ckpt), steps, s / steps, tokens_per_s, per_token * tokens_per_s / 1e12);
  if (peak > 0) std::printf(" mfu=%.1f%%", 100.0 * per_token * tokens_per_s / peak);
  if (dev.is_cuda()) std::printf(" peak_mem_gib=%.1f", peak_gib);
  if (phases)
    std::printf(" forward_ms=%.1f backward_ms=%.1f optimizer_ms=%.1f", 1e3 * t_fwd / steps, 1e3 * t_bwd / steps,
                1e3 * t_opt / steps);
  std::printf("\n");
  return 0;
}
