// Without mpirun: a singleton MPI job of one rank, and collectives that are the identity.
#include <gtest/gtest.h>
#include <sched.h>

#include "parallel/mpi_communicator.h"
#include "parallel/world.h"

namespace kiln::parallel {
namespace {

TEST(WorldSingleton, OneRankWithoutALauncher) {
  World& w = World::get();
  EXPECT_EQ(w.size(), 1);
  EXPECT_EQ(w.rank(), 0);
  EXPECT_EQ(w.local_rank(), 0);
  EXPECT_TRUE(w.is_root());
  EXPECT_EQ(w.launcher(), "singleton");
  EXPECT_FALSE(w.hostname().empty());
  EXPECT_NE(w.describe_layout().find("launcher singleton"), std::string::npos);
}

TEST(WorldSingleton, ThreadsFromTheRecipeOrTheAffinity) {
  World& w = World::get();
  EXPECT_EQ(w.configure_threads(1), 1);
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  EXPECT_EQ(w.configure_threads(0), CPU_COUNT(&set));
  EXPECT_EQ(w.threads(), CPU_COUNT(&set));
}

TEST(WorldSingleton, CollectivesOnOneRank) {
  MpiCommunicator comm(10);
  at::Tensor t = at::arange(5, at::kFloat);
  comm.all_reduce(t, ReduceOp::Avg);
  EXPECT_TRUE(at::equal(t, at::arange(5, at::kFloat)));
  at::Tensor out = at::empty({5});
  comm.all_gather(out, t);
  EXPECT_TRUE(at::equal(out, t));
  comm.barrier();
}

}  // namespace
}  // namespace kiln::parallel
