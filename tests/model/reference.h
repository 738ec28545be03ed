// An independent float64 LLaMA forward for the tests: its own safetensors and config.json reading,
// plain loops over std::vector<double>, nothing shared with src/model. Written from the Hugging Face
// definition (rotate-half RoPE, repeat_kv grouping, RMSNorm, SwiGLU), slow and obvious on purpose.
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln_test {

struct RefLlama {
  int64_t dim = 0, hidden = 0, layers = 0, heads = 0, kv = 0, vocab = 0, hd = 0;
  double eps = 0, theta = 0;
  bool tied = false;
  std::map<std::string, std::vector<double>> w;

  explicit RefLlama(const std::string& dir) {
    std::ifstream cf(dir + "/config.json");
    auto c = nlohmann::json::parse(cf);
    dim = c["hidden_size"];
    hidden = c["intermediate_size"];
    layers = c["num_hidden_layers"];
    heads = c["num_attention_heads"];
    kv = c.value("num_key_value_heads", heads);
    vocab = c["vocab_size"];
    eps = c["rms_norm_eps"];
    theta = c.value("rope_theta", 10000.0);
    tied = c.value("tie_word_embeddings", false);
    hd = dim / heads;
    std::ifstream f(dir + "/model.safetensors", std::ios::binary);
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    f.read(&header[0], std::streamsize(n));
    std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto h = nlohmann::json::parse(header);
    for (auto it = h.begin(); it != h.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      if ((*it)["dtype"] != "F32") throw std::runtime_error("reference reads F32 only");
      uint64_t b = (*it)["data_offsets"][0], e = (*it)["data_offsets"][1];
      std::vector<double> v((e - b) / 4);
      for (size_t i = 0; i < v.size(); ++i) {
        float x;
        std::memcpy(&x, data.data() + b + 4 * i, 4);
        v[i] = x;
      }
      w[it.key()] = std::move(v);
    }
  }

  const std::vector<double>& W(const std::string& name) const { return w.at(name); }

  // y[o] = sum_i M[o][i] x[i], M row-major [out][in]
  static std::vector<double> matvec(const std::vector<double>& M, const std::vector<double>& x, int64_t out) {
    const int64_t in = int64_t(x.size());
    std::vector<double> y(size_t(out), 0.0);
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += M[size_t(o * in + i)] * x[size_t(i)];
      y[size_t(o)] = s;
    }
    return y;
  }

  std::vector<double> rmsnorm(const std::vector<double>& x, const std::vector<double>& g) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(x.size()) + eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * g[i];
    return y;
  }

  void rope(std::vector<double>& v, int64_t nheads, int64_t pos) const {
    for (int64_t h = 0; h < nheads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double ang = double(pos) * std::pow(theta, -double(2 * i) / double(hd));
        double& a = v[size_t(h * hd + i)];
        double& b = v[size_t(h * hd + i + hd / 2)];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(ang) - b0 * std::sin(ang);
        b = b0 * std::cos(ang) + a0 * std::sin(ang);
      }
  }

  // logits[t][v] for a forward over ids: causal, or bidirectional (every position sees all)
  std::vector<std::vector<double>> forward(const std::vector<int64_t>& ids, bool causal = true) const {
    const int64_t T = int64_t(ids.size());
    std::vector<std::vector<double>> x(static_cast<size_t>(T));
    const auto& E = W("model.embed_tokens.weight");
    for (int64_t t = 0; t < T; ++t) x[size_t(t)].assign(E.begin() + ids[size_t(t)] * dim, E.begin() + (ids[size_t(t)] + 1) * dim);
    for (int64_t l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      std::vector<std::vector<double>> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)), v(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        auto xn = rmsnorm(x[size_t(t)], W(p + "input_layernorm.weight"));
        q[size_t(t)] = matvec(W(p + "self_attn.q_proj.weight"), xn, heads * hd);
        k[size_t(t)] = matvec(W(p + "self_attn.k_proj.weight"), xn, kv * hd);
        v[size_t(t)] = matvec(W(p + "self_attn.v_proj.weight"), xn, kv * hd);
        rope(q[size_t(t)], heads, t);
        rope(k[size_t(t)], kv, t);
      }
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> att(static_cast<size_t>(heads * hd), 0.0);
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t g = h / (heads / kv);
          const int64_t last = causal ? t : T - 1;
          std::vector<double> s(static_cast<size_t>(last + 1));
          double mx = -1e300;
          for (int64_t j = 0; j <= last; ++j) {
            double d = 0;
            for (int64_t i = 0; i < hd; ++i) d += q[size_t(t)][size_t(h * hd + i)] * k[size_t(j)][size_t(g * hd + i)];
            s[size_t(j)] = d / std::sqrt(double(hd));
            mx = std::max(mx, s[size_t(j)]);
          }
          double z = 0;
          for (auto& e : s) z += (e = std::exp(e - mx));
          for (int64_t j = 0; j <= last; ++j)
            for (int64_t i = 0; i < hd; ++i) att[size_t(h * hd + i)] += s[size_t(j)] / z * v[size_t(j)][size_t(g * hd + i)];
        }
        auto o = matvec(W(p + "self_attn.o_proj.weight"), att, dim);
        for (int64_t i = 0; i < dim; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
        auto xn = rmsnorm(x[size_t(t)], W(p + "post_attention_layernorm.weight"));
        auto gt = matvec(W(p + "mlp.gate_proj.weight"), xn, hidden);
        auto up = matvec(W(p + "mlp.up_proj.weight"), xn, hidden);
        for (int64_t i = 0; i < hidden; ++i) gt[size_t(i)] = gt[size_t(i)] / (1 + std::exp(-gt[size_t(i)])) * up[size_t(i)];
        auto dn = matvec(W(p + "mlp.down_proj.weight"), gt, dim);
        for (int64_t i = 0; i < dim; ++i) x[size_t(t)][size_t(i)] += dn[size_t(i)];
      }
    }
    std::vector<std::vector<double>> logits(static_cast<size_t>(T));
    const auto& head = tied ? W("model.embed_tokens.weight") : W("lm_head.weight");
    for (int64_t t = 0; t < T; ++t) logits[size_t(t)] = matvec(head, rmsnorm(x[size_t(t)], W("model.norm.weight")), vocab);
    return logits;
  }
};

}  // namespace kiln_test
