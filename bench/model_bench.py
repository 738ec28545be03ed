#!/usr/bin/env python3
"""The PyTorch twin of bench_model: the same LLaMA + LoRA forward+backward step in Python, for
comparing kiln's C++ against Python on the same libtorch (Debian's python3-torch).

  /usr/bin/python3 bench/model_bench.py --model ../shared/models/stories260K/hf --threads 1
  /usr/bin/python3 bench/model_bench.py --random --threads 2

Written like transformers' LlamaForCausalLM with PEFT LoRA (r 8, alpha 16 on q_proj and v_proj), with
no dependency beyond torch. Prints one line; figures are reported in docs/model.md, never asserted.
"""
import argparse, json, math, struct, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoraLinear(nn.Module):
    def __init__(self, i, o, r=0, alpha=16):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(o, i))
        self.r = r
        if r:
            self.lora_A = nn.Linear(i, r, bias=False)
            self.lora_B = nn.Linear(r, o, bias=False)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
            self.scaling = alpha / r

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.r:
            y = y + self.lora_B(self.lora_A(x)) * self.scaling
        return y


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


class Layer(nn.Module):
    def __init__(self, c, targets):
        super().__init__()
        d, self.h, self.kv = c["hidden_size"], c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
        self.hd = d // self.h
        r = lambda n: 8 if n in targets else 0
        self.q_proj = LoraLinear(d, self.h * self.hd, r("q_proj"))
        self.k_proj = LoraLinear(d, self.kv * self.hd, r("k_proj"))
        self.v_proj = LoraLinear(d, self.kv * self.hd, r("v_proj"))
        self.o_proj = LoraLinear(self.h * self.hd, d, r("o_proj"))
        self.gate_proj = LoraLinear(d, c["intermediate_size"], r("gate_proj"))
        self.up_proj = LoraLinear(d, c["intermediate_size"], r("up_proj"))
        self.down_proj = LoraLinear(c["intermediate_size"], d, r("down_proj"))
        self.input_layernorm = RMSNorm(d, c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(d, c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, 1)  # transformers' repeat_kv
        v = v.repeat_interleave(rep, 1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        a = torch.softmax(s.float(), -1).to(q.dtype) @ v
        x = x + self.o_proj(a.transpose(1, 2).reshape(B, T, -1))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c, targets=("q_proj", "v_proj")):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Parameter(torch.empty(c["vocab_size"], c["hidden_size"]))
        self.layers = nn.ModuleList(Layer(c, targets) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = None if c.get("tie_word_embeddings") else nn.Parameter(torch.empty(c["vocab_size"], c["hidden_size"]))

    def forward(self, ids):
        B, T = ids.shape
        hd = self.c["hidden_size"] // self.c["num_attention_heads"]
        inv = 1.0 / (self.c.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        f = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
        emb = torch.cat((f, f), -1)
        cos, sin = emb.cos().float(), emb.sin().float()
        mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)
        x = F.embedding(ids, self.embed_tokens)
        for l in self.layers:
            x = l(x, cos, sin, mask)
        return F.linear(self.norm(x), self.embed_tokens if self.lm_head is None else self.lm_head)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32"
        b, e = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).view(v["shape"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--profile", help="a chrome://tracing file of 2 extra steps")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.random:
        c = dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                 num_attention_heads=8, num_key_value_heads=8, rms_norm_eps=1e-5, tie_word_embeddings=False)
        m = Llama(c)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora" in n:
                    continue
                if "layernorm" in n or n == "norm.weight":
                    p.fill_(1.0)
                else:
                    p.normal_(0, 0.02)
    else:
        c = json.load(open(a.model + "/config.json"))
        m = Llama(c)
        w = load_safetensors(a.model + "/model.safetensors")
        with torch.no_grad():
            m.embed_tokens.copy_(w["model.embed_tokens.weight"])
            m.norm.weight.copy_(w["model.norm.weight"])
            for i, l in enumerate(m.layers):
                for n, p in l.named_parameters():
                    if "lora" in n:
                        continue
                    sub = "self_attn." if n.split(".")[0] in ("q_proj", "k_proj", "v_proj", "o_proj") else \
                          "mlp." if n.split(".")[0] in ("gate_proj", "up_proj", "down_proj") else ""
                    p.copy_(w[f"model.layers.{i}.{sub}{n}"])
    for n, p in m.named_parameters():
        p.requires_grad_("lora" in n)
    m.train()
    V = c["vocab_size"]
    ids = torch.randint(3, V, (a.batch, a.seq))

    def step():
        m.zero_grad(set_to_none=False)
        logits = m(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
        loss.backward()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    s = time.perf_counter() - t0
    nparams = sum(p.numel() for p in m.parameters())
    ntrain = sum(p.numel() for p in m.parameters() if p.requires_grad)
    print(f"pytorch-py model={'random-8x512' if a.random else a.model} params={nparams} lora_params={ntrain} "
          f"threads={a.threads} batch={a.batch} seq={a.seq} steps={a.steps} step_ms={1000 * s / a.steps:.1f} "
          f"tokens_per_s={a.batch * (a.seq - 1) * a.steps / s:.0f}")
    if a.profile:
        with torch.autograd.profiler.profile() as prof:
            for _ in range(2):
                step()
        prof.export_chrome_trace(a.profile)


if __name__ == "__main__":
    main()
