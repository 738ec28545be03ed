// Collectives over MPI for CPU tensors. One communication thread per communicator issues the
// non-blocking MPI call (MPI_Iallreduce, ...) and polls MPI_Test against the deadline, so:
//  - the caller (e.g. an autograd hook) only queues work and returns to backward;
//  - MPI is entered from one thread at a time (MPI_THREAD_SERIALIZED suffices);
//  - a collective that does not finish in timeout_s ends the job with a message (the watchdog).
// CUDA tensors are staged through pinned host memory, or passed to MPI directly when the library
// reports CUDA-aware support. Half and bfloat16 are reduced in their own precision, as NCCL reduces
// them: user-defined MPI operations add in float and round to the 16-bit type at every addition
// (so a bf16 bucket gives the same sums on both backends, not more accurate ones under MPI).
// Avg is the sum divided by the world size afterwards, in the tensor's dtype.
#pragma once
#include <memory>

#include "parallel/communicator.h"

namespace kiln::parallel {

class MpiCommunicator : public Communicator {
 public:
  // Duplicates MPI_COMM_WORLD (World::get() must exist), so kiln's traffic never matches anyone
  // else's messages.
  explicit MpiCommunicator(double timeout_s);
  ~MpiCommunicator() override;

  int rank() const override;
  int size() const override;
  std::string backend() const override { return "mpi"; }
  bool cuda_aware() const;

  struct Impl;

 protected:
  WorkPtr start(Op op) override;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::parallel
