// Under mpirun -np 2: data-parallel training over 2 ranks gives the losses of one rank with the
// whole global batch (fp32, 1e-5 relative), with and without gradient accumulation, with ZeRO-1,
// with and without overlap; parameters agree on every rank after every step.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <cmath>

#include "core/config.h"
#include "parallel/checking_communicator.h"
#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "parallel/world.h"
#include "train/zero1.h"
#include "mlp.h"

namespace kiln::parallel {
namespace {

// ZeRO-1 is an optimizer (src/train), tested here against the plain data-parallel path.
using train::AdamWOptions;
using train::AdamWState;
using train::Zero1AdamW;

constexpr int64_t kIn = 24, kHidden = 96, kClasses = 7;
constexpr int kSteps = 20;
constexpr double kLr = 3e-3, kWd = 0.1, kClip = 1.0;

struct Result {
  std::vector<double> losses;
  std::vector<at::Tensor> params;
  AdamWState state;
};

std::unique_ptr<torch::optim::AdamW> make_torch_adamw(torch::nn::Sequential& m) {
  std::vector<at::Tensor> decay, no_decay;
  auto flags = testing::decay_flags(m);
  auto params = m->parameters();
  for (size_t i = 0; i < params.size(); ++i) (flags[i] ? decay : no_decay).push_back(params[i]);
  auto opts = [](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(kLr).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, opts(kWd));
  groups.emplace_back(no_decay, opts(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(kLr));
}

AdamWState torch_state(torch::optim::AdamW& opt, const std::vector<at::Tensor>& params) {
  AdamWState s;
  for (const auto& p : params) {
    auto& st = static_cast<torch::optim::AdamWParamState&>(*opt.state().at(p.unsafeGetTensorImpl()));
    s.step = st.step();
    s.exp_avg.push_back(st.exp_avg().clone());
    s.exp_avg_sq.push_back(st.exp_avg_sq().clone());
  }
  return s;
}

// One process, the whole global batch in one forward: the oracle.
Result run_reference(int64_t global_rows) {
  auto model = testing::make_mlp(kIn, kHidden, kClasses, 7);
  auto opt = make_torch_adamw(model);
  Result r;
  for (int step = 0; step < kSteps; ++step) {
    auto [x, y] = testing::global_batch(step, global_rows, kIn, kClasses);
    opt->zero_grad();
    at::Tensor loss = at::cross_entropy_loss(model->forward(x), y, {}, at::Reduction::Sum) / global_rows;
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), kClip);
    opt->step();
    r.losses.push_back(loss.item<double>());
  }
  for (auto& p : model->parameters()) r.params.push_back(p.detach().clone());
  r.state = torch_state(*opt, model->parameters());
  return r;
}

struct DpOptions {
  int64_t micro = 4;
  int accum = 1;
  bool zero1 = false;
  bool overlap = true;
  double bucket_mb = 0.01;  // several buckets, and ZeRO shards that cut through parameters
};

Result run_dp(const DpOptions& o, Communicator& comm) {
  const int rank = comm.rank(), world = comm.size();
  // Different initial weights on each rank: broadcast_parameters must make them rank 0's.
  auto model = testing::make_mlp(kIn, kHidden, kClasses, rank == 0 ? 7 : 99);
  DistConfig cfg;
  cfg.bucket_mb = o.bucket_mb;
  cfg.overlap = o.overlap;
  cfg.zero1 = o.zero1;
  auto params = model->parameters();
  GradSync sync(params, comm, cfg, ReduceOp::Sum);
  if (o.bucket_mb < 0.1) EXPECT_GT(sync.buckets().size(), 2u);
  else EXPECT_EQ(sync.buckets().size(), 1u);
  sync.broadcast_parameters();
  std::unique_ptr<torch::optim::AdamW> torch_opt;
  std::unique_ptr<Zero1AdamW> zero;
  if (o.zero1)
    zero = std::make_unique<Zero1AdamW>(sync, testing::decay_flags(model),
                                        AdamWOptions{kLr, 0.9, 0.95, 1e-8, kWd});
  else
    torch_opt = make_torch_adamw(model);

  const int64_t global_rows = o.micro * o.accum * world;
  Result r;
  for (int step = 0; step < kSteps; ++step) {
    comm.set_context(step, "test step");
    auto [x, y] = testing::global_batch(step, global_rows, kIn, kClasses);
    for (auto& p : params) p.mutable_grad().reset();
    double local_loss = 0;
    for (int k = 0; k < o.accum; ++k) {
      int64_t begin = (static_cast<int64_t>(rank) * o.accum + k) * o.micro;
      sync.set_sync(k == o.accum - 1);
      at::Tensor loss = at::cross_entropy_loss(model->forward(x.narrow(0, begin, o.micro)),
                                               y.narrow(0, begin, o.micro), {}, at::Reduction::Sum) /
                        global_rows;
      loss.backward();
      local_loss += loss.item<double>();
    }
    sync.finish();
    if (zero) {
      zero->step(kLr, kClip);
    } else {
      torch::nn::utils::clip_grad_norm_(params, kClip);
      torch_opt->step();
    }
    at::Tensor l = at::full({1}, local_loss, at::TensorOptions().dtype(at::kDouble));
    comm.all_reduce(l, ReduceOp::Sum, "loss");
    r.losses.push_back(l.item<double>());
    EXPECT_TRUE(same_on_all_ranks(comm, params)) << "parameters differ across ranks after step " << step;
  }
  for (auto& p : params) r.params.push_back(p.detach().clone());
  r.state = zero ? zero->gather_state() : torch_state(*torch_opt, params);
  return r;
}

void expect_equivalent(const Result& dp, const Result& ref, bool compare_state) {
  ASSERT_EQ(dp.losses.size(), ref.losses.size());
  double worst = 0;
  for (size_t i = 0; i < ref.losses.size(); ++i) {
    double rel = std::abs(dp.losses[i] - ref.losses[i]) / std::abs(ref.losses[i]);
    worst = std::max(worst, rel);
    EXPECT_LE(rel, 1e-5) << "step " << i << ": " << dp.losses[i] << " vs " << ref.losses[i];
  }
  // The run must have learned something, or matching losses would prove little.
  EXPECT_LT(ref.losses.back(), ref.losses.front() * 0.9);
  double pw = 0;
  for (size_t i = 0; i < ref.params.size(); ++i) pw = std::max(pw, (dp.params[i] - ref.params[i]).abs().max().item<double>());
  EXPECT_LE(pw, 1e-4);
  if (World::get().rank() == 0) {
    std::printf("[ losses ] worst relative difference %.3g over %zu steps; params max abs diff %.3g\n", worst,
                ref.losses.size(), pw);
    if (compare_state) {
      ASSERT_EQ(dp.state.exp_avg.size(), ref.state.exp_avg.size());
      EXPECT_EQ(dp.state.step, ref.state.step);
      for (size_t i = 0; i < ref.state.exp_avg.size(); ++i) {
        EXPECT_TRUE(at::allclose(dp.state.exp_avg[i], ref.state.exp_avg[i], 1e-4, 1e-7)) << "exp_avg " << i;
        EXPECT_TRUE(at::allclose(dp.state.exp_avg_sq[i], ref.state.exp_avg_sq[i], 1e-4, 1e-10)) << "exp_avg_sq " << i;
      }
    }
  }
}

class DataParallel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    World::get().configure_threads(1);
    mpi_ = new MpiCommunicator(60);
    // Every collective of these tests is checked: buffers untouched while in flight, the same
    // sequence on every rank.
    comm_ = new CheckingCommunicator(*mpi_);
  }
  static void TearDownTestSuite() {
    delete comm_;
    delete mpi_;
    comm_ = nullptr;
  }
  static MpiCommunicator* mpi_;
  static CheckingCommunicator* comm_;
};
MpiCommunicator* DataParallel::mpi_ = nullptr;
CheckingCommunicator* DataParallel::comm_ = nullptr;

TEST_F(DataParallel, RunsOnTwoRanks) { EXPECT_EQ(comm_->size(), 2); }

TEST_F(DataParallel, TwoRanksEqualOneRankWithDoubleBatch) {
  DpOptions o;
  expect_equivalent(run_dp(o, *comm_), run_reference(o.micro * comm_->size()), true);
}

TEST_F(DataParallel, WithoutOverlap) {
  DpOptions o;
  o.overlap = false;
  expect_equivalent(run_dp(o, *comm_), run_reference(o.micro * comm_->size()), false);
}

TEST_F(DataParallel, GradientAccumulation) {
  DpOptions o;
  o.micro = 3;
  o.accum = 3;
  expect_equivalent(run_dp(o, *comm_), run_reference(o.micro * o.accum * comm_->size()), false);
}

TEST_F(DataParallel, Zero1) {
  DpOptions o;
  o.zero1 = true;
  expect_equivalent(run_dp(o, *comm_), run_reference(o.micro * comm_->size()), true);
}

TEST_F(DataParallel, Zero1WithAccumulationOneBigBucket) {
  DpOptions o;
  o.zero1 = true;
  o.accum = 2;
  o.micro = 2;
  o.bucket_mb = 64;
  expect_equivalent(run_dp(o, *comm_), run_reference(o.micro * o.accum * comm_->size()), true);
}

// The full optimizer state survives a gather/load round trip, so a checkpoint written at one world
// size can be resumed at another (the gathered layout does not depend on the world size).
TEST_F(DataParallel, Zero1StateRoundTrip) {
  auto model = testing::make_mlp(kIn, kHidden, kClasses, 7);
  DistConfig cfg;
  cfg.zero1 = true;
  cfg.bucket_mb = 0.01;
  GradSync sync(model->parameters(), *comm_, cfg);
  Zero1AdamW opt(sync, testing::decay_flags(model), AdamWOptions{kLr, 0.9, 0.95, 1e-8, kWd});
  AdamWState s;
  s.step = 5;
  for (auto& p : model->parameters()) {
    s.exp_avg.push_back(at::randn(p.sizes()));
    s.exp_avg_sq.push_back(at::rand(p.sizes()));
  }
  if (comm_->rank() != 0) s = AdamWState{};
  opt.load_state(s);
  EXPECT_EQ(opt.steps(), 5);
  AdamWState back = opt.gather_state();
  if (comm_->rank() == 0) {
    for (size_t i = 0; i < s.exp_avg.size(); ++i) {
      EXPECT_TRUE(at::equal(back.exp_avg[i], s.exp_avg[i]));
      EXPECT_TRUE(at::equal(back.exp_avg_sq[i], s.exp_avg_sq[i]));
    }
  }
  int64_t total = 0;
  for (auto& p : model->parameters()) total += 2 * p.numel() * 4;
  // Each rank holds its half (plus at most world-1 padding elements per bucket).
  EXPECT_LE(opt.state_bytes(), total / 2 + 8 * static_cast<int64_t>(sync.buckets().size()) * 2);
}

}  // namespace
}  // namespace kiln::parallel
