#include "train/signals.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "core/log.h"

#include <csignal>

namespace kiln::train {

namespace {
volatile std::sig_atomic_t g_signal = 0;
int g_depth = 0;  // StopSignals alive: a run of phases holds one around each phase's own
extern "C" void on_stop_signal(int sig) {
  if (!g_signal) g_signal = sig;
}
}  // namespace

struct StopSignals::Saved {
  struct sigaction term, usr1;
};

StopSignals::StopSignals() : saved_(new Saved) {
  // Only signals that arrive while the handlers are ours count; a nested one (a phase's trainer
  // inside a run of phases) keeps what arrived between phases.
  if (g_depth++ == 0) g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a signal must not make a blocking read or MPI call fail
  sigaction(SIGTERM, &sa, &saved_->term);
  sigaction(SIGUSR1, &sa, &saved_->usr1);
}

StopSignals::~StopSignals() {
  --g_depth;
  sigaction(SIGTERM, &saved_->term, nullptr);
  sigaction(SIGUSR1, &saved_->usr1, nullptr);
  delete saved_;
}

bool StopSignals::requested() { return g_signal != 0; }
int StopSignals::signal() { return int(g_signal); }
void StopSignals::reset() { g_signal = 0; }

void advise_on_bare_mpirun(bool is_root) {
  if (!is_root || std::getenv("KILN_LAUNCHER")) return;
  std::ifstream comm_file(fmt::format("/proc/{}/comm", ::getppid()));
  std::string parent;
  std::getline(comm_file, parent);
  if (parent != "mpirun" && parent != "mpiexec" && parent != "orterun" && parent != "orted") return;
  const char* t = std::getenv("OMPI_MCA_odls_base_sigkill_timeout");
  if (t && std::atof(t) >= 10) return;
  log::warn("pre-emption under a bare mpirun: a SIGTERM to mpirun reaches the ranks after {} s and is followed by "
            "SIGKILL as long again, so the step in progress and its checkpoint are lost. Send SIGUSR1 instead "
            "(mpirun forwards it), start through launch/mpirun.sh, or export OMPI_MCA_odls_base_sigkill_timeout=60 "
            "before mpirun (docs/train.md, Pre-emption)",
            t ? t : "1");
}

}  // namespace kiln::train
