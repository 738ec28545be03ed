// Under mpirun -np 2: every collective of MpiCommunicator, on the dtypes and layouts the trainer
// uses, and World's view of the job.
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

TEST_F(Collectives, MismatchedShapesAreInternalErrors) {
  at::Tensor in = at::zeros({3});
  at::Tensor out = at::zeros({5});
  EXPECT_THROW(comm_->all_gather(out, in), InternalError);
  at::Tensor ints = at::zeros({2}, at::kLong);
  EXPECT_THROW(comm_->all_reduce(ints, ReduceOp::Avg), InternalError);
}

}  // namespace
}  // namespace kiln::parallel
