// Training-step time with the gradient all-reduce overlapped with backward (dist.overlap) and not,
// on an MLP large enough for communication to matter. Prints per-configuration mean step time
// and the time finish() still waited for communication after backward.
// Run: mpirun -np 2 --bind-to none --oversubscribe bench_dist_overlap [width layers batch bucket_mb steps]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "core/config.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "parallel/world.h"

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  using namespace kiln::parallel;
  const int64_t width = argc > 1 ? std::atoll(argv[1]) : 1024;
  const int layers = argc > 2 ? std::atoi(argv[2]) : 12;
  const int64_t batch = argc > 3 ? std::atoll(argv[3]) : 32;
  const double bucket_mb = argc > 4 ? std::atof(argv[4]) : 25;
  const int steps = argc > 5 ? std::atoi(argv[5]) : 10;
  World& w = World::get();
  w.configure_threads(0);
  MpiCommunicator comm(600);
  torch::manual_seed(1);
  torch::nn::Sequential model;
  for (int i = 0; i < layers; ++i) {
    model->push_back(torch::nn::Linear(width, width));
    model->push_back(torch::nn::Tanh());
  }
  int64_t numel = 0;
  for (auto& p : model->parameters()) numel += p.numel();
  if (w.is_root())
    std::printf("# ranks %d, threads/rank %d, MLP %d x %lld^2 (%.1f MB of fp32 gradients), batch %lld/rank, "
                "bucket %.1f MB, %d steps\n",
                comm.size(), w.threads(), layers, static_cast<long long>(width), numel * 4 / 1e6,
                static_cast<long long>(batch), bucket_mb, steps);
  for (int pass = 0; pass < 2; ++pass) {
    for (bool overlap : {false, true}) {
      kiln::DistConfig cfg;
      cfg.overlap = overlap;
      cfg.bucket_mb = bucket_mb;
      GradSync sync(model->parameters(), comm, cfg);
      at::Tensor x = at::randn({batch, width});
      double total = 0, waited = 0, backward = 0;
      for (int s = -2; s < steps; ++s) {  // two warm-up steps
        for (auto& p : model->parameters()) p.mutable_grad().reset();
        comm.barrier();
        auto t0 = Clock::now();
        at::Tensor loss = model->forward(x).pow(2).mean();
        loss.backward();
        auto t1 = Clock::now();
        sync.finish();
        auto t2 = Clock::now();
        if (s < 0) continue;
        backward += std::chrono::duration<double>(t1 - t0).count();
        total += std::chrono::duration<double>(t2 - t0).count();
        waited += sync.last_wait_s();
      }
      if (w.is_root() && pass == 1)
        std::printf("overlap %-3s  step %8.1f ms   forward+backward %8.1f ms   waiting for communication after backward %8.1f ms\n",
                    overlap ? "on" : "off", total / steps * 1e3, backward / steps * 1e3, waited / steps * 1e3);
    }
  }
  // A reference: the same step with no communication at all.
  if (w.is_root()) {
    at::Tensor x = at::randn({batch, width});
    double total = 0;
    for (int s = -2; s < steps; ++s) {
      for (auto& p : model->parameters()) p.mutable_grad().reset();
      auto t0 = Clock::now();
      model->forward(x).pow(2).mean().backward();
      if (s >= 0) total += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    std::printf("no communication (rank 0 alone, the other rank idle)  step %8.1f ms\n", total / steps * 1e3);
  }
  comm.barrier();
  return 0;
}
