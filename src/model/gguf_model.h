// LLaMA-architecture models in and out of GGUF (core/gguf.h is the container): the tensor types
// llama.cpp stores (dequantized here exactly as ggml's reference code does), llama.cpp's tensor
// names and its q/k row order, the hyper-parameters in `<arch>.*` metadata, and the tokenizer
// (data/gguf_vocab.h). Import writes a Hugging Face folder every kiln command takes; export writes
// a Hugging Face causal-LM folder (a merged kiln export) as a GGUF file llama.cpp runs.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/gguf.h"

namespace kiln::model {

// The tensor types kiln reads: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
bool gguf_can_dequantize(uint32_t type);
// `n` elements of `type` at `src` into float32 `dst` (n a multiple of the type's block). Another
// type is an InputError naming it and `what` (the tensor and file).
void gguf_dequantize(uint32_t type, const uint8_t* src, uint64_t n, float* dst, const std::string& what);
// The whole tensor as a float32 CPU tensor in PyTorch's shape order (ggml's ne reversed).
at::Tensor gguf_tensor(const gguf::File& f, const gguf::Tensor& t);

// The types kiln writes: F32, F16, BF16, Q8_0 (Q8_0 as ggml's reference quantizer rounds).
bool gguf_can_quantize(uint32_t type);
std::vector<uint8_t> gguf_quantize(uint32_t type, const at::Tensor& t);  // t: contiguous rows of ne[0]

// llama.cpp stores q and k with each head's rotary halves interleaved (its RoPE pairs adjacent
// elements); Hugging Face keeps the two halves apart. These move rows between the two orders.
at::Tensor rope_rows_from_gguf(const at::Tensor& w, int64_t heads);
at::Tensor rope_rows_to_gguf(const at::Tensor& w, int64_t heads);

struct GgufImportOptions {
  at::ScalarType dtype = at::kFloat;  // of model.safetensors: float32 or bfloat16
};

// FILE (general.architecture llama or mistral) into the new folder `out_dir` (which must not exist,
// or be empty): config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, generation_config.json. Complete or absent. Anything kiln cannot
// represent (an architecture, a tensor type, a tensor, a pre-tokenizer) is a one-line InputError
// naming it.
void import_gguf(const std::string& file, const std::string& out_dir, const GgufImportOptions& opts = {});

// The Hugging Face causal-LM folder `hf_dir` (config.json, model.safetensors, tokenizer files) as
// the GGUF file `out_path`, weights in `type` (F32, F16, BF16 or Q8_0; norms stay F32 as llama.cpp
// keeps them), with its tokenizer and chat template. A classifier folder is refused.
void export_gguf(const std::string& hf_dir, const std::string& out_path, uint32_t type);

}  // namespace kiln::model
