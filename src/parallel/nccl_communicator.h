// Collectives on CUDA tensors over NCCL. Built only with KILN_WITH_CUDA.
// The NCCL unique id is made by rank 0 and sent with MPI_Bcast; every collective runs on the
// communicator's own stream (taken on the World's device), ordered after the caller's current
// stream by an event, so it overlaps the kernels the caller queues next.
//
// The NCCL communicator is non-blocking (ncclConfig_t::blocking = 0; KILN_NCCL_BLOCKING=1 turns
// that off): its setup and the enqueue of a collective (which may wait for peers to connect) return
// at once and are polled, so that they meet the same deadline as the collective itself instead of
// waiting forever on a rank that never comes. wait() polls the completion event and NCCL's
// asynchronous error against the operation's deadline; on an error or a timeout it aborts the
// NCCL communicator (releasing kernels spinning on a dead peer) and ends the job with the watchdog
// message. It then orders the caller's current stream after the collective.
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

  // For the work handles (nccl_communicator.cpp).
  struct Impl;
  Impl& impl() { return *impl_; }
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
