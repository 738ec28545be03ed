// Under mpirun -np 2: every collective of MpiCommunicator, on the dtypes and layouts the trainer
// uses, World's view of the job, and the check that all ranks agree on their devices (a pure
// function, fed with made-up GPU layouts, since this machine has no GPU).
#include <gtest/gtest.h>

#include "core/config.h"
#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/world.h"

namespace kiln::parallel {
namespace {

class Collectives : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { comm_ = new MpiCommunicator(60); }
  static void TearDownTestSuite() { delete comm_; }
  static MpiCommunicator* comm_;
  int rank() const { return comm_->rank(); }
};
MpiCommunicator* Collectives::comm_ = nullptr;

TEST_F(Collectives, WorldMatchesTheCommunicator) {
  World& w = World::get();
  EXPECT_EQ(w.size(), 2);
  EXPECT_EQ(w.rank(), comm_->rank());
  EXPECT_EQ(w.launcher(), "mpirun");
  EXPECT_EQ(w.local_size(), 2);  // both ranks on this machine
  EXPECT_EQ(w.local_rank(), w.rank());
  EXPECT_TRUE(w.device().is_cpu());
  EXPECT_EQ(w.configure_threads(1), 1);
  std::string layout = w.describe_layout();
  if (w.rank() == 0) {
    EXPECT_NE(layout.find("rank 0/2"), std::string::npos) << layout;
    EXPECT_NE(layout.find("rank 1/2"), std::string::npos) << layout;
  }
}

TEST_F(Collectives, AllReduceSumAndAvg) {
  for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
    at::Tensor t = at::arange(10, at::TensorOptions().dtype(dtype)) * (rank() + 1);
    comm_->all_reduce(t, ReduceOp::Sum);
    EXPECT_TRUE(at::equal(t, at::arange(10, at::TensorOptions().dtype(dtype)) * 3)) << c10::toString(dtype);
    at::Tensor a = at::full({3}, rank() == 0 ? 1.0 : 2.0, at::TensorOptions().dtype(dtype));
    comm_->all_reduce(a, ReduceOp::Avg);
    EXPECT_TRUE(at::equal(a, at::full({3}, 1.5, at::TensorOptions().dtype(dtype)))) << c10::toString(dtype);
  }
  at::Tensor i = at::full({4}, rank() + 5, at::kLong);
  comm_->all_reduce(i, ReduceOp::Sum);
  EXPECT_TRUE(at::equal(i, at::full({4}, 11, at::kLong)));
}

// bf16 and fp16 are reduced in their own dtype, as NCCL does: on two ranks that is a + b rounded
// once, which is what at::add gives, bit for bit, on either rank. Values span many binades so
// that rounding happens on most elements.
at::Tensor spread_values(at::ScalarType dtype, int64_t seed, int64_t n) {
  at::manual_seed(static_cast<uint64_t>(seed));
  const int max_exp = dtype == at::kHalf ? 8 : 30;  // fp16 tops out at 65504
  at::Tensor x = at::randn({n}, at::kDouble) * at::exp2(at::randint(-max_exp, max_exp, {n}, at::kDouble));
  return x.to(dtype);
}

TEST_F(Collectives, SixteenBitSumsAreRoundedOnceLikeAtAdd) {
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    const int64_t n = 4096;
    at::Tensor a = spread_values(dtype, 11, n), b = spread_values(dtype, 12, n);
    ASSERT_FALSE(at::equal(at::add(a, b).to(at::kDouble), a.to(at::kDouble) + b.to(at::kDouble)))
        << "the values should need rounding";
    at::Tensor sum = at::add(a, b);
    const at::Tensor& mine = rank() == 0 ? a : b;

    at::Tensor t = mine.clone();
    comm_->all_reduce(t, ReduceOp::Sum);
    EXPECT_EQ(t.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(t, sum)) << c10::toString(dtype);
    // Avg is the reduced sum divided by the world size afterwards, in the dtype.
    t = mine.clone();
    comm_->all_reduce(t, ReduceOp::Avg);
    EXPECT_TRUE(at::equal(t, sum.div(2))) << c10::toString(dtype);

    // reduce_scatter: rank r gets chunk r of the same sums.
    at::Tensor chunk = at::empty({n / 2}, mine.options());
    comm_->reduce_scatter(chunk, mine, ReduceOp::Sum);
    EXPECT_TRUE(at::equal(chunk, sum.chunk(2)[rank()])) << c10::toString(dtype);
    comm_->reduce_scatter(chunk, mine, ReduceOp::Avg);
    EXPECT_TRUE(at::equal(chunk, sum.div(2).chunk(2)[rank()])) << c10::toString(dtype);
  }
}

TEST_F(Collectives, AllReduceNonContiguousInPlace) {
  at::Tensor base = at::arange(12, at::kFloat).view({3, 4}) + rank();
  at::Tensor col = base.t();  // a transposed view: staged, then written back through the view
  comm_->all_reduce(col, ReduceOp::Sum);
  EXPECT_TRUE(at::equal(base, at::arange(12, at::kFloat).view({3, 4}) * 2 + 1));
}

TEST_F(Collectives, Broadcast) {
  at::Tensor t = rank() == 1 ? at::arange(6, at::kBFloat16) : at::zeros({6}, at::kBFloat16);
  comm_->broadcast(t, 1);
  EXPECT_TRUE(at::equal(t, at::arange(6, at::kBFloat16)));
}

TEST_F(Collectives, AllGatherAndReduceScatter) {
  at::Tensor in = at::full({5}, static_cast<float>(rank() + 1));
  at::Tensor out = at::empty({2, 5});
  comm_->all_gather(out, in);
  EXPECT_TRUE(at::equal(out[0], at::full({5}, 1.f)));
  EXPECT_TRUE(at::equal(out[1], at::full({5}, 2.f)));

  at::Tensor big = at::arange(8, at::kFloat) * (rank() + 1);  // ranks: 0..7 and 0,2..14
  at::Tensor mine = at::empty({4});
  comm_->reduce_scatter(mine, big, ReduceOp::Sum);
  EXPECT_TRUE(at::equal(mine, (at::arange(4, at::kFloat) + 4 * rank()) * 3));
  comm_->reduce_scatter(mine, big, ReduceOp::Avg);
  EXPECT_TRUE(at::equal(mine, (at::arange(4, at::kFloat) + 4 * rank()) * 1.5));
}

TEST_F(Collectives, AsyncWorkRunsInOrderAndOverlapsTheCaller) {
  std::vector<at::Tensor> ts;
  std::vector<WorkPtr> works;
  for (int i = 0; i < 8; ++i) {
    ts.push_back(at::full({1000}, static_cast<float>(i + rank())));
    works.push_back(comm_->all_reduce_async(ts.back(), ReduceOp::Sum, "async " + std::to_string(i)));
  }
  comm_->barrier();
  for (int i = 0; i < 8; ++i) {
    works[i]->wait();
    works[i]->wait();  // idempotent
    EXPECT_TRUE(works[i]->done());
    EXPECT_TRUE(at::equal(ts[i], at::full({1000}, static_cast<float>(2 * i + 1))));
  }
}

TEST_F(Collectives, ChecksumsAgreeOnlyWhenTensorsDo) {
  std::vector<at::Tensor> same = {at::arange(100, at::kFloat), at::ones({3, 3})};
  EXPECT_TRUE(same_on_all_ranks(*comm_, same));
  std::vector<at::Tensor> differ = {at::full({4}, static_cast<float>(rank()))};
  EXPECT_FALSE(same_on_all_ranks(*comm_, differ));
}

TEST_F(Collectives, ContextNamesTheStep) {
  EXPECT_EQ(comm_->context(), "before the first step");
  comm_->set_context(12, "backward");
  EXPECT_EQ(comm_->context(), "step 12 (backward)");
}

TEST_F(Collectives, FactoryPicksMpiOnCpuAndRejectsNccl) {
  DistConfig cfg;
  auto c = make_communicator(cfg, World::get());
  EXPECT_EQ(c->backend(), "mpi");
  EXPECT_EQ(c->size(), 2);
  cfg.backend = "nccl";
  EXPECT_THROW(make_communicator(cfg, World::get()), InputError);
}

TEST_F(Collectives, EveryRankGetsTheSameVerdictOnDevices) {
  World& w = World::get();
  DeviceChoice mine = w.device_choice("mpi");
  EXPECT_EQ(mine.rank, w.rank());
  EXPECT_EQ(mine.host, w.hostname());
  EXPECT_EQ(mine.device, "cpu");
  EXPECT_EQ(check_device_agreement(w.gather_device_choices(mine)), "");
  // Rank 1 pretends to have a GPU (and brings a separator in its KILN_DEVICE): the fields come
  // through the exchange, and both ranks reach the same one-line verdict.
  if (w.rank() == 1) {
    mine.device = "cuda:1";
    mine.gpu = "00ff";
    mine.visible_gpus = 2;
    mine.request = "auto\x1f";
  }
  std::vector<DeviceChoice> all = w.gather_device_choices(mine);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].device, "cuda:1");
  EXPECT_EQ(all[1].gpu, "00ff");
  EXPECT_EQ(all[1].visible_gpus, 2);
  EXPECT_EQ(all[1].local_rank, 1);
  EXPECT_EQ(all[1].request, "auto ");
  all[1].request = "auto";
  std::string verdict = check_device_agreement(all);
  const std::string expected =
      "rank 0 on cpu, rank 1 on cuda: every rank must use the same device type; torch sees no GPU on host " + w.hostname();
  EXPECT_EQ(verdict.rfind(expected, 0), 0u) << verdict;
  std::vector<std::string> verdicts = all_gather_bytes(verdict, *comm_);
  EXPECT_EQ(verdicts[0], verdicts[1]);
}

TEST_F(Collectives, MismatchedShapesAreInternalErrors) {
  at::Tensor in = at::zeros({3});
  at::Tensor out = at::zeros({5});
  EXPECT_THROW(comm_->all_gather(out, in), InternalError);
  at::Tensor ints = at::zeros({2}, at::kLong);
  EXPECT_THROW(comm_->all_reduce(ints, ReduceOp::Avg), InternalError);
}

DeviceChoice choice(int rank, std::string host, int local_rank, std::string device, std::string gpu = "",
                    std::string backend = "nccl") {
  DeviceChoice c;
  c.rank = rank;
  c.host = std::move(host);
  c.local_rank = local_rank;
  c.device = std::move(device);
  c.gpu = std::move(gpu);
  c.visible_gpus = c.device == "cpu" ? 0 : 2;
  c.backend = c.device == "cpu" ? "mpi" : std::move(backend);
  return c;
}

TEST(DeviceAgreement, OneRankPerGpuOnEveryHostAgrees) {
  EXPECT_EQ(check_device_agreement({choice(0, "a", 0, "cuda:0", "a0"), choice(1, "a", 1, "cuda:1", "a1"),
                                    choice(2, "b", 0, "cuda:0", "b0"), choice(3, "b", 1, "cuda:1", "b1")}),
            "");
  EXPECT_EQ(check_device_agreement({choice(0, "a", 0, "cpu"), choice(1, "a", 1, "cpu"), choice(2, "b", 0, "cpu")}), "");
  EXPECT_EQ(check_device_agreement({choice(0, "a", 0, "cpu")}), "");
}

TEST(DeviceAgreement, ARankWithoutAGpuIsNamed) {
  EXPECT_EQ(check_device_agreement({choice(0, "a", 0, "cuda:0", "a0"), choice(1, "a", 1, "cuda:1", "a1"),
                                    choice(2, "b", 0, "cpu")}),
            "ranks 0,1 on cuda, rank 2 on cpu: every rank must use the same device type; torch sees no GPU on "
            "host b (check the NVIDIA driver and CUDA_VISIBLE_DEVICES there), or run every rank on the CPU with "
            "KILN_DEVICE=cpu");
  // Many ranks: ranges, not hundreds of numbers.
  std::vector<DeviceChoice> all;
  for (int r = 0; r < 64; ++r) {
    std::string host = "n" + std::to_string(r / 8);
    bool gpu = r != 10 && r != 40 && r != 41;
    all.push_back(gpu ? choice(r, host, r % 8, fmt::format("cuda:{}", r % 8), std::to_string(r))
                      : choice(r, host, r % 8, "cpu"));
  }
  std::string e = check_device_agreement(all);
  EXPECT_EQ(e.rfind("ranks 0-9,11-39,42-63 on cuda, ranks 10,40,41 on cpu: every rank must use the same device "
                    "type; torch sees no GPU on hosts n1, n5 (",
                    0),
            0u)
      << e;
}

TEST(DeviceAgreement, TwoRanksOnOneGpuAreRefused) {
  // Three ranks on a host that sees two GPUs: local rank 2 wraps around to cuda:0.
  std::string e = check_device_agreement({choice(0, "gpu01", 0, "cuda:0", "u0"), choice(1, "gpu01", 1, "cuda:1", "u1"),
                                          choice(2, "gpu01", 2, "cuda:0", "u0")});
  EXPECT_EQ(e, "host gpu01 has 3 ranks (local ranks 0-2) but 2 GPUs for them: local ranks 0,2 would share cuda:0; "
               "start at most 2 ranks on a host (one per GPU), or run on the CPU with KILN_DEVICE=cpu");
  // Under MPI with GPU tensors too: the ranks would share the GPU's memory without a word.
  std::vector<DeviceChoice> mpi = {choice(0, "a", 0, "cuda:0", "u0", "mpi"), choice(1, "a", 1, "cuda:0", "u0", "mpi"),
                                   choice(2, "b", 0, "cuda:0", "v0", "mpi"), choice(3, "b", 1, "cuda:0", "v0", "mpi")};
  e = check_device_agreement(mpi);
  EXPECT_EQ(e, "host a (and 1 other host) has 2 ranks (local ranks 0,1) but 1 GPU for them: local ranks 0,1 would "
               "share cuda:0; start at most 1 rank on a host (one per GPU), or run on the CPU with KILN_DEVICE=cpu");
}

TEST(DeviceAgreement, GpusAreToldApartByUuidNotByIndex) {
  // srun --gpus-per-task=1: every rank sees its own GPU as cuda:0.
  std::vector<DeviceChoice> own;
  for (int r = 0; r < 4; ++r) own.push_back(choice(r, "a", r, "cuda:0", "uuid" + std::to_string(r)));
  for (auto& c : own) c.visible_gpus = 1;
  EXPECT_EQ(check_device_agreement(own), "");
  // Without UUIDs, the index is all there is to compare.
  for (auto& c : own) c.gpu.clear();
  EXPECT_NE(check_device_agreement(own).find("local ranks 0-3 would share cuda:0"), std::string::npos);
}

TEST(DeviceAgreement, BackendsAndRequestsMustAgree) {
  EXPECT_EQ(check_device_agreement(
                {choice(0, "a", 0, "cuda:0", "a0", "nccl"), choice(1, "b", 0, "cuda:0", "b0", "mpi")}),
            "rank 0 would use nccl, rank 1 would use mpi: every rank must use the same communicator (recipe key "
            "`dist.backend`)");
  std::vector<DeviceChoice> all = {choice(0, "a", 0, "cuda:0", "a0"), choice(1, "b", 0, "cpu")};
  all[1].request = "cuda";
  EXPECT_EQ(check_device_agreement(all),
            "rank 1 (host b): KILN_DEVICE=cuda but torch sees no GPU there; check the NVIDIA driver and "
            "CUDA_VISIBLE_DEVICES on those nodes");
  all[1].request = "gpu";
  EXPECT_EQ(check_device_agreement(all), "rank 1: KILN_DEVICE=gpu: expected auto, cpu or cuda");
  all[1] = choice(1, "b", 0, "cuda:0", "b0");
  all[1].problem = "cuda:0 failed: CUDA-capable device(s) is/are busy or unavailable";
  EXPECT_EQ(check_device_agreement(all), "rank 1 (host b): cannot use the GPU: cuda:0 failed: CUDA-capable device(s) "
                                         "is/are busy or unavailable");
}

}  // namespace
}  // namespace kiln::parallel
