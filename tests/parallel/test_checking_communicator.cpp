// Under mpirun -np 2: the checking communicator passes correct use through (same results as the MPI
// communicator) and finds, on every rank at once, a buffer written while its collective is in
// flight and ranks that issue different collectives.
#include <gtest/gtest.h>

#include "parallel/checking_communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/world.h"

namespace kiln::parallel {
namespace {

class Checking : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    World::get().configure_threads(1);
    mpi_ = new MpiCommunicator(60);
    comm_ = new CheckingCommunicator(*mpi_);
  }
  static void TearDownTestSuite() {
    delete comm_;
    delete mpi_;
  }
  static MpiCommunicator* mpi_;
  static CheckingCommunicator* comm_;
};
MpiCommunicator* Checking::mpi_ = nullptr;
CheckingCommunicator* Checking::comm_ = nullptr;

TEST_F(Checking, CorrectUsePassesThrough) {
  const int r = comm_->rank();
  at::Tensor a = at::full({5}, double(r + 1));
  at::Tensor b = at::full({3}, double(10 * (r + 1)));
  auto wa = comm_->all_reduce_async(a, ReduceOp::Sum, "a");
  auto wb = comm_->all_reduce_async(b, ReduceOp::Avg, "b");
  wb->wait();  // out of order: a runs first, as started
  wa->wait();
  EXPECT_TRUE(at::equal(a, at::full({5}, 3.0)));
  EXPECT_TRUE(at::equal(b, at::full({3}, 15.0)));
  at::Tensor g = at::empty({4}), mine = at::full({2}, double(r));
  comm_->all_gather(g, mine, "gather");
  EXPECT_TRUE(at::equal(g, at::tensor({0.0, 0.0, 1.0, 1.0}).to(g.scalar_type())));
  at::Tensor in = at::arange(4, at::kFloat), out = at::empty({2});
  comm_->reduce_scatter(out, in, ReduceOp::Sum, "scatter");
  EXPECT_TRUE(at::equal(out, at::arange(4, at::kFloat).narrow(0, 2 * r, 2) * 2));
  comm_->barrier("barrier");
  EXPECT_GE(comm_->checked(), 5);
}

TEST_F(Checking, BufferWrittenInFlightIsFoundOnEveryRank) {
  at::Tensor t = at::ones({16});
  auto w = comm_->all_reduce_async(t, ReduceOp::Sum, "grad bucket 1/1");
  if (comm_->rank() == 1) t[3] = 2.0;  // only one rank misbehaves; every rank must hear of it
  try {
    w->wait();
    ADD_FAILURE() << "a buffer written in flight went unnoticed";
  } catch (const CollectiveMisuse& e) {
    EXPECT_NE(std::string(e.what()).find("written after the operation started, on rank(s) 1"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("grad bucket 1/1"), std::string::npos) << e.what();
  }
}

TEST_F(Checking, DifferentCollectivesAreFoundOnEveryRank) {
  const int r = comm_->rank();
  at::Tensor t = at::ones({r == 0 ? 4 : 5});
  try {
    comm_->all_reduce(t, ReduceOp::Sum, r == 0 ? "bucket 1" : "bucket 2");
    ADD_FAILURE() << "ranks issued different collectives unnoticed";
  } catch (const CollectiveMisuse& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("rank 0 issued all_reduce of 4 elements"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 1 issued all_reduce of 5 elements"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'bucket 2'"), std::string::npos) << msg;
  }
  // A different kind with the same sizes, and a label that differs alone.
  at::Tensor u = at::ones({4});
  EXPECT_THROW(r == 0 ? comm_->broadcast(u, 0, "x") : comm_->all_reduce(u, ReduceOp::Sum, "x"), CollectiveMisuse);
  EXPECT_THROW(comm_->all_reduce(u, ReduceOp::Sum, r == 0 ? "loss" : "count"), CollectiveMisuse);
  // Usable again afterwards.
  at::Tensor v = at::ones({2});
  comm_->all_reduce(v, ReduceOp::Sum, "after");
  EXPECT_TRUE(at::equal(v, at::full({2}, 2.0)));
}

}  // namespace
}  // namespace kiln::parallel
