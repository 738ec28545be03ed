#!/usr/bin/env python3
"""GGUF reference files for kiln's tests, made with the `gguf` package (llama.cpp's own Python).

Usage: gguf_reference.py types OUT_DIR
Writes OUT_DIR/types.gguf, one tensor per type kiln reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1 quantized
by the package from random values; Q4_K and Q6_K, which the package cannot quantize, as random
blocks with sane F16 scales), and OUT_DIR/expected.safetensors with each tensor as
`gguf.quants.dequantize` reads it back, plus `q8_input` and its Q8_0 bytes from `gguf.quants.quantize`
(`q8_bytes`), and `q_rows`/`q_rows_gguf`: projection rows in Hugging Face order and as llama.cpp's
converter permutes them (heads 4).
"""
import os
import sys

import numpy as np
from safetensors.numpy import save_file

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROWS, COLS = 6, 512  # two k-quant super-blocks of 256 per row


def random_k_blocks(rng, qtype):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = ROWS * COLS // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    if qtype == T.Q4_K:  # d, dmin at the start of the block
        raw[:, 0:2] = scales
        raw[:, 2:4] = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    elif qtype == T.Q6_K:  # d at the end
        raw[:, size - 2:size] = scales
    return raw.reshape(ROWS, -1)


def llama_cpp_permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def types(out):
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    w = gguf.GGUFWriter(os.path.join(out, "types.gguf"), "llama")
    expected = {}
    for qtype in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K, T.Q6_K]:
        name = qtype.name.lower()
        if qtype in (T.Q4_K, T.Q6_K):
            raw = random_k_blocks(rng, qtype)
        elif qtype == T.F32:
            raw = x
        else:
            raw = quantize(x, qtype)
        if qtype == T.F32:
            w.add_tensor(name, raw)
        elif qtype == T.F16:
            w.add_tensor(name, raw)  # float16 array: written as F16
        else:
            w.add_tensor(name, raw, raw_dtype=qtype)
        expected[name] = np.ascontiguousarray(dequantize(raw if qtype != T.F16 else raw.view(np.uint8), qtype)
                                              .astype(np.float32).reshape(ROWS, COLS))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    q8_in = (rng.standard_normal((4, 64)) * 3).astype(np.float32)
    q8_in[1, :32] = 0  # an all-zero block: d = 0
    expected["q8_input"] = q8_in
    expected["q8_bytes"] = np.ascontiguousarray(quantize(q8_in, T.Q8_0))
    q = rng.standard_normal((4 * 8, 5)).astype(np.float32)  # 4 heads of dimension 8
    expected["q_rows"] = q
    expected["q_rows_gguf"] = np.ascontiguousarray(llama_cpp_permute(q, 4))
    save_file(expected, os.path.join(out, "expected.safetensors"))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "types":
        sys.exit(__doc__)
    types(sys.argv[2])
