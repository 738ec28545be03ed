// A communicator that catches, on CPU-only machines, the data-parallel bugs that a real backend
// hides until it meets the wrong timing on a cluster:
//  - a buffer written between start() and wait(): start() snapshots what the operation will read
//    and does not run it; the operation runs only when it (or a later one) is waited for, after
//    comparing the buffer with its snapshot. A gradient added twice to a bucket already "in
//    flight" (two hooks for one gradient) is found every time, not one run in three;
//  - ranks issuing different collectives: before each operation every rank's signature (kind,
//    label, element counts, dtype, root, reduction) is gathered and compared with rank 0's.
// Both checks are collective (every rank learns every rank's verdict in the same exchange), so all
// ranks throw the same CollectiveMisuse, from wait(), and none is left in a mismatched collective.
// The operations started before the finding are dropped on every rank; later ones run as usual.
//
// Operations still run in the order they were started, as the Communicator contract says; done()
// runs the operation (it cannot complete behind the caller's back).
#pragma once
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "parallel/communicator.h"

namespace kiln::parallel {

struct CollectiveMisuse : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class CheckingCommunicator : public Communicator {
 public:
  explicit CheckingCommunicator(Communicator& inner);
  explicit CheckingCommunicator(std::unique_ptr<Communicator> inner);
  ~CheckingCommunicator() override;

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend() + "+checked"; }

  int64_t checked() const;  // operations compared and run so far

  struct Pending;

 protected:
  WorkPtr start(Op op) override;

 private:
  void run_through(Pending* target);
  void run_one(Pending& p);

  std::unique_ptr<Communicator> owned_;
  Communicator* inner_;
  std::mutex queue_mutex_;  // queue_: start() may run on autograd's threads
  std::mutex run_mutex_;    // one waiter runs the queue at a time
  std::deque<std::shared_ptr<Pending>> queue_;
  int64_t checked_ = 0, issued_ = 0;
};

}  // namespace kiln::parallel
