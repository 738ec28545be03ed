// Forward+backward tokens/s of a Llama with LoRA (the training step minus the optimizer), to compare
// with bench/model_bench.py, the same model and step in PyTorch Python over the same libtorch.
//   bench_model --model ../shared/models/stories260K/hf --threads 1
//   bench_model --random --threads 2
//   bench_model --model models/smollm2-135m-instruct --dtype bfloat16 --batch 8 --seq 128 [--forward]
// --dtype bfloat16 loads the weights in bfloat16 and runs the step under bf16 autocast, as
// `kiln train` does with model.dtype: bfloat16 and train.precision: bf16; --forward times the
// forward pass alone (no gradients), as evaluation and generation's prompt pass run it.
// Prints one line per run; figures go to docs/model.md. Never asserted.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "core/host_memory.h"
#include "model/hf_io.h"
#include "model/lora.h"
#include "train/autocast.h"

using namespace kiln::model;

int main(int argc, char** argv) {
  std::string model_dir, profile, dtype = "float32";
  bool random = false, ckpt = false, forward_only = false;
  int threads = 1, batch = 4, seq = 256, steps = 10, warmup = 2;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--model") model_dir = next();
    else if (a == "--random") random = true;
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--seq") seq = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--checkpointing") ckpt = true;
    else if (a == "--dtype") dtype = next();
    else if (a == "--forward") forward_only = true;
    else if (a == "--profile") profile = next();  // a chrome://tracing file of 2 extra steps
    else {
      std::fprintf(stderr, "usage: bench_model (--model DIR | --random) [--threads N] [--batch B] [--seq T] [--steps S] [--checkpointing] [--dtype float32|bfloat16] [--forward] [--profile TRACE.json]\n");
      return 2;
    }
  }
  kiln::tune_host_allocator();  // as kiln does; KILN_MALLOC_TUNING=0 measures glibc's defaults
  at::set_num_threads(threads);
  at::manual_seed(0);
  Llama m{nullptr};
  if (random) {
    // The "8-layer, 512-wide" config: LLaMA-2's vocabulary and MLP ratio at toy depth and width.
    m = Llama(LlamaConfig::from_json_text(
        R"({"vocab_size":32000,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":8,
            "num_attention_heads":8,"num_key_value_heads":8,"rms_norm_eps":1e-5,"tie_word_embeddings":false})",
        "random-8x512"));
    m->init_weights(0.02);
  } else {
    m = load_pretrained(model_dir, parse_dtype(dtype));
  }
  const bool bf16 = parse_dtype(dtype) == at::kBFloat16;
  kiln::LoraConfig lc;  // r 8, alpha 16, q_proj + v_proj: PEFT's LLaMA default
  apply_lora(m, lc, {});
  m->set_activation_checkpointing(ckpt);
  m->train();
  const int64_t V = m->config().vocab_size;
  at::Tensor ids = at::randint(3, V, {batch, seq}, at::kLong);
  auto step = [&] {
    kiln::train::Autocast ac(bf16, at::kCPU);
    if (forward_only) {
      at::NoGradGuard ng;
      m->forward(ids).sum().item<float>();
      return;
    }
    m->zero_grad();
    at::Tensor logits = m->forward(ids.narrow(1, 0, seq - 1));
    at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, V}), ids.narrow(1, 1, seq - 1).reshape({-1}));
    loss.backward();
  };
  for (int i = 0; i < warmup; ++i) step();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t n_params = 0, n_train = 0;
  for (auto& p : m->parameters()) {
    n_params += p.numel();
    if (p.requires_grad()) n_train += p.numel();
  }
  std::printf("kiln-cpp model=%s params=%lld lora_params=%lld threads=%d batch=%d seq=%d steps=%d ckpt=%d dtype=%s "
              "%s step_ms=%.1f tokens_per_s=%.0f\n",
              random ? "random-8x512" : model_dir.c_str(), (long long)n_params, (long long)n_train, threads, batch, seq,
              steps, int(ckpt), dtype.c_str(), forward_only ? "forward" : "forward+backward", 1000 * s / steps,
              double(batch) * (forward_only ? seq : seq - 1) * steps / s);
  if (!profile.empty()) {
    torch::autograd::profiler::RecordProfile guard(profile);
    for (int i = 0; i < 2; ++i) step();
  }
  return 0;
}
