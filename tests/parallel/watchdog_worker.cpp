// A data-parallel training loop for the watchdog test: records its pid and progress in DIR so the
// driver (test_watchdog.cpp) can kill -9 or stop one rank in the middle of training.
// Usage: watchdog_worker TIMEOUT_S|default DIR   (default: DistConfig's dist.timeout_s)
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "core/config.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "parallel/world.h"
#include "mlp.h"

int main(int argc, char** argv) {
  using namespace kiln::parallel;
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s TIMEOUT_S DIR\n", argv[0]);
    return 2;
  }
  const double timeout = std::string(argv[1]) == "default" ? kiln::DistConfig{}.timeout_s : std::stod(argv[1]);
  const std::string dir = argv[2];
  World& world = World::get();
  world.configure_threads(1);
  MpiCommunicator comm(timeout);
  std::ofstream(dir + "/rank" + std::to_string(world.rank()) + ".pid") << getpid() << "\n";

  auto model = testing::make_mlp(16, 64, 5, 3);
  kiln::DistConfig cfg;
  cfg.bucket_mb = 0.005;
  cfg.timeout_s = timeout;
  GradSync sync(model->parameters(), comm, cfg);
  sync.broadcast_parameters();
  auto params = model->parameters();
  for (int step = 0; step < 3000; ++step) {
    comm.set_context(step, "backward");
    auto [x, y] = testing::global_batch(step, 8, 16, 5);
    for (auto& p : params) p.mutable_grad().reset();
    at::Tensor loss = at::cross_entropy_loss(model->forward(x.narrow(0, world.rank() * 4, 4)),
                                             y.narrow(0, world.rank() * 4, 4), {}, at::Reduction::Sum) / 8;
    loss.backward();
    sync.finish();
    comm.set_context(step, "loss");
    at::Tensor l = loss.detach().reshape({1});
    comm.all_reduce(l, ReduceOp::Sum, "loss");
    {
      std::ofstream progress(dir + "/rank" + std::to_string(world.rank()) + ".step");
      progress << step << "\n";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}
