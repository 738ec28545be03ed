// Under mpirun (-np 2 and -np 3): the trainer at the settings users run, every combination of LoRA
// or full fine-tuning, activation checkpointing, ZeRO-1, gradient accumulation and precision, two
// steps each under the checking communicator (parallel/checking_communicator.h: a buffer written
// while its collective is in flight, or ranks issuing different collectives, is an error), with
// tiny buckets so that every parameter's all-reduce starts as soon as its gradient arrives. Each
// combination must give the losses and weights of the plain one (no checkpointing, no ZeRO-1, no
// accumulation) of its precision. With 3 ranks the ZeRO-1 shards do not divide the buckets evenly.
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include <filesystem>

#include "core/error.h"
#include "parallel/checking_communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "parallel/world.h"
#include "llama_task.h"
#include "train/trainer.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

struct Env {
  parallel::World& world = parallel::World::get();
  std::unique_ptr<parallel::MpiCommunicator> mpi;
  std::unique_ptr<parallel::CheckingCommunicator> comm;
  Env() {
    world.configure_threads(1);
    mpi = std::make_unique<parallel::MpiCommunicator>(120);
    comm = std::make_unique<parallel::CheckingCommunicator>(*mpi);
  }
};
Env& env() {
  static Env e;
  return e;
}

struct Setting {
  bool lora = true, ckpt = false, zero1 = false, bf16 = false;
  int accum = 1;
  std::string name() const {
    return fmt::format("{} ckpt={} zero1={} accum={} {}", lora ? "lora" : "full", ckpt, zero1, accum,
                       bf16 ? "bf16" : "fp32");
  }
};

struct Outcome {
  std::vector<double> losses;
  std::vector<at::Tensor> weights;
};

constexpr int64_t kGlobalBatch = 12;  // divides into 2 and 3 ranks, with and without accumulation

Recipe recipe_for(const Setting& s, const std::string& run_dir) {
  Recipe r;
  r.name = "dp-checked";
  r.method = "llama_test";
  r.train.seed = 3;
  r.train.global_batch = kGlobalBatch;
  r.train.micro_batch = kGlobalBatch / (env().world.size() * s.accum);
  r.train.max_steps = 2;
  r.train.lr = 2e-2;
  r.train.weight_decay = 0.01;
  r.train.schedule = "constant";
  r.train.warmup_steps = 0;
  r.train.max_grad_norm = 0.5;
  r.train.precision = s.bf16 ? "bf16" : "fp32";
  r.model.activation_checkpointing = s.ckpt;
  r.lora.enabled = s.lora;
  r.lora.r = 4;
  r.lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  r.dist.zero1 = s.zero1;
  r.dist.bucket_mb = 0.001;  // about 260 floats: most parameters have a bucket of their own
  r.checkpoint.run_dir = run_dir;
  r.checkpoint.keep = 1;
  r.checkpoint.resume = "none";
  r.log.tensorboard = false;
  r.tree = recipe::parse_string("method: llama_test\n", "dp_checked.yaml");
  return r;
}

Outcome run(const Setting& s) {
  auto& e = env();
  std::string dir = fmt::format("{}/kiln_test_dp_checked_np{}", fs::temp_directory_path().string(), e.world.size());
  if (e.world.is_root()) fs::remove_all(dir);
  e.mpi->barrier();
  Recipe r = recipe_for(s, dir);
  test::LlamaTask task;
  task.build(r, e.world, *e.comm);
  train::Trainer trainer(r, task, e.world, *e.comm);
  Outcome o;
  o.losses = trainer.fit().losses;  // two steps, an evaluation and a checkpoint, all checked
  for (auto& [n, p] : task.trainable()) o.weights.push_back(p.detach().to(at::kFloat).clone());
  return o;
}

void expect_same(const Outcome& got, const Outcome& ref, double loss_tol, double weight_tol, const std::string& what) {
  ASSERT_EQ(got.losses.size(), ref.losses.size()) << what;
  ASSERT_EQ(got.weights.size(), ref.weights.size()) << what;
  double loss_diff = 0, weight_diff = 0;
  for (size_t i = 0; i < ref.losses.size(); ++i)
    loss_diff = std::max(loss_diff, std::abs(got.losses[i] - ref.losses[i]) / std::abs(ref.losses[i]));
  for (size_t i = 0; i < ref.weights.size(); ++i)
    weight_diff = std::max(weight_diff, (got.weights[i] - ref.weights[i]).abs().max().item<double>());
  EXPECT_LE(loss_diff, loss_tol) << what;
  EXPECT_LE(weight_diff, weight_tol) << what;
  if (env().world.is_root())
    std::printf("[ %-40s ] losses %.6f %.6f; relative loss difference %.3g, weights max abs difference %.3g\n",
                what.c_str(), got.losses[0], got.losses[1], loss_diff, weight_diff);
}

class DataParallelChecked : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(DataParallelChecked, EveryCombinationEqualsThePlainRun) {
  auto [lora, bf16] = GetParam();
  const int64_t before = env().comm->checked();
  Setting plain;
  plain.lora = lora;
  plain.bf16 = bf16;
  Outcome ref = run(plain);
  // Something must have trained, or equal weights would prove little.
  EXPECT_NE(ref.losses[0], ref.losses[1]);
  for (int accum : {1, 2}) {
    Setting base = plain;
    base.accum = accum;
    // Accumulation pads each micro-batch to its own longest example and sums gradients in another
    // order; AdamW's first steps magnify that in elements whose gradient is near zero (their update
    // is about lr either way). float32: losses to 1e-6, weights to 1e-4 (lr 2e-2); bf16 autocast
    // rounds those sums differently: losses to 5e-3, weights to 2.5 lr. Checkpointing and ZeRO-1
    // compute the same sums as the run without them: 1e-6 for both, in both precisions.
    Outcome acc_ref = accum == 1 ? ref : run(base);
    if (accum != 1)
      expect_same(acc_ref, ref, bf16 ? 5e-3 : 1e-6, bf16 ? 5e-2 : 1e-4, base.name() + " vs accum=1");
    for (bool ckpt : {false, true})
      for (bool zero1 : {false, true}) {
        if (!ckpt && !zero1) continue;
        Setting s = base;
        s.ckpt = ckpt;
        s.zero1 = zero1;
        expect_same(run(s), acc_ref, 1e-6, 1e-6, s.name());
      }
  }
  EXPECT_GT(env().comm->checked() - before, 100) << "the checking communicator saw too few collectives";
}

INSTANTIATE_TEST_SUITE_P(Settings, DataParallelChecked,
                         ::testing::Combine(::testing::Bool() /*lora*/, ::testing::Bool() /*bf16 autocast*/),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "Lora" : "Full") +
                                  (std::get<1>(info.param) ? "Bf16" : "Fp32");
                         });

// A bf16 base trained in full: ZeRO-1 keeps float32 moments and updates as the replicated AdamW does.
TEST(DataParallelBf16, Zero1EqualsPlainAdamWWithBf16Weights) {
  Setting plain;
  plain.lora = false;
  plain.bf16 = true;
  auto with_bf16_base = [&](Setting s) {
    auto& e = env();
    std::string dir = fmt::format("{}/kiln_test_dp_bf16_np{}", fs::temp_directory_path().string(), e.world.size());
    if (e.world.is_root()) fs::remove_all(dir);
    e.mpi->barrier();
    Recipe r = recipe_for(s, dir);
    r.model.dtype = "bfloat16";
    r.train.max_steps = 6;
    test::LlamaTask task;
    task.build(r, e.world, *e.comm);
    train::Trainer trainer(r, task, e.world, *e.comm);
    Outcome o;
    o.losses = trainer.fit().losses;
    for (auto& [n, p] : task.trainable()) {
      EXPECT_EQ(p.scalar_type(), at::kBFloat16) << n;
      o.weights.push_back(p.detach().to(at::kFloat).clone());
    }
    return o;
  };
  Outcome ref = with_bf16_base(plain);
  Setting z = plain;
  z.zero1 = true;
  // The same float32 arithmetic on the same reduced bf16 gradients, rounded once into bf16.
  expect_same(with_bf16_base(z), ref, 0.0, 0.0, "bf16 weights, zero1 against AdamW");
}

// The checkpointing of kiln before this test existed: the layer differentiated its parameters
// with autograd::grad and returned their gradients, so a gradient hook ran twice per gradient.
// GradSync or the checking communicator must refuse it (the second add either finds its bucket's
// collective started, or changes a buffer that collective reads).
struct OldCheckpointedLinear : public torch::autograd::Function<OldCheckpointedLinear> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor w) {
    ctx->save_for_backward({x});
    ctx->saved_data["w"] = w;
    return {at::matmul(x, w.detach().t())};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    at::Tensor x = ctx->get_saved_variables()[0];
    at::Tensor w = ctx->saved_data["w"].toTensor();
    at::Tensor y;
    {
      at::AutoGradMode on(true);
      y = at::matmul(x, w.t());
    }
    auto grads = torch::autograd::grad({y}, {w}, {g[0]});
    return {at::Tensor(), grads[0]};
  }
};

TEST(DataParallelChecker, OldCheckpointHookIsRefused) {
  auto& e = env();
  torch::manual_seed(1);
  at::Tensor w = at::randn({8, 4}).requires_grad_(true);
  DistConfig cfg;
  cfg.bucket_mb = 0.0001;
  bool refused = false;
  std::string why;
  {
    parallel::GradSync sync({w}, *e.comm, cfg);
    try {
      at::Tensor y = OldCheckpointedLinear::apply(at::randn({3, 4}), w)[0];
      y.sum().backward();
      sync.finish();
    } catch (const std::exception& ex) {
      refused = true;
      why = ex.what();
    }
  }
  EXPECT_TRUE(refused) << "a gradient hook running twice went unnoticed";
  if (e.world.is_root()) std::printf("[ refused ] %s\n", why.substr(0, why.find('\n')).c_str());
}

}  // namespace
