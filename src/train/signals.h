// Pre-emption: SIGTERM and SIGUSR1 (what Slurm sends before pre-emption or the time limit, e.g.
// `#SBATCH --signal=B:USR1@120`) only raise a flag. The trainer checks it once per step, agrees
// across ranks (a max all-reduce) so every rank stops after the same step, writes a checkpoint and
// exits with kExitPreempted (3). A second signal while stopping is ignored: the checkpoint is on its way.
#pragma once

namespace kiln::train {

class StopSignals {
 public:
  StopSignals();   // installs the handlers; the previous ones come back in the destructor
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  static bool requested();
  static int signal();  // the signal number received, 0 if none
  static void reset();  // for tests

 private:
  struct Saved;
  Saved* saved_;
};

// A bare Open MPI mpirun, on a SIGTERM of its own, sends the ranks SIGTERM after
// odls_base_sigkill_timeout seconds (default 1) and SIGKILL after as many again: the step in
// progress and its checkpoint are lost. When this process's parent is mpirun (or orted), kiln was
// not started through launch/ (which relays SIGTERM as SIGUSR1 and sets the timeout), and
// OMPI_MCA_odls_base_sigkill_timeout is unset or short, rank 0 says so once, with the ways out.
void advise_on_bare_mpirun(bool is_root);

}  // namespace kiln::train
