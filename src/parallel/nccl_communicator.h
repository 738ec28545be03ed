// Collectives on CUDA tensors over NCCL. Built only with KILN_WITH_CUDA.
// The NCCL unique id is made by rank 0 and sent with MPI_Bcast; every collective runs on the
// communicator's own stream, ordered after the caller's current stream by an event, so it overlaps
// the kernels the caller queues next. wait() polls the completion event against the deadline
// (and NCCL's asynchronous error), aborts the NCCL communicator on timeout and ends the job with
// the watchdog message; it then orders the caller's current stream after the collective.
#pragma once
#ifdef KILN_WITH_CUDA
#include <memory>

#include "parallel/communicator.h"

namespace kiln::parallel {

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(double timeout_s, World& world);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  struct Impl;
  [[noreturn]] void fail_op(const Op& op, const std::string& why);
  void report_waiting(const Op& op, double waited_s) const { still_waiting(op, waited_s); }
  using Communicator::report_every;

 protected:
  WorkPtr start(Op op) override;

 private:
  int rank_ = 0, size_ = 1;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::parallel
#endif
