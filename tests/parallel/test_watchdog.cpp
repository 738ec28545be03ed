// The watchdog end to end: two ranks train under mpirun; the driver kill -9s (or SIGSTOPs) rank 1
// in the middle of training; rank 0 must print the one-line message naming the collective and the
// step and exit non-zero within timeout + 10 s.
//
// mpirun itself ends the whole job when one of its processes dies, which would hide what rank 0
// does; --enable-recovery keeps it from doing so, and a small shell wrapper records each rank's
// exit code and time, so the test sees rank 0's own behaviour. (Without the flag the job still ends
// non-zero at once, by mpirun's hand.)
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "core/config.h"

namespace {

using Clock = std::chrono::system_clock;

std::string read(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

struct Outcome {
  std::string log;
  int rank0_rc = -1;
  double rank0_after_signal = -1;  // seconds from the signal to rank 0's exit
  int mpirun_status = 0;
};

// timeout < 0: the worker runs with the default dist.timeout_s.
Outcome run(int sig, double timeout_arg) {
  const double timeout = timeout_arg < 0 ? kiln::DistConfig{}.timeout_s : timeout_arg;
  char tmpl[] = "/tmp/kiln-watchdog-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string cmd = std::string(KILN_MPIRUN_CMD) + " -np 2 --enable-recovery sh -c '\"$0\" \"$1\" \"$2\"; rc=$?; " +
                    "date +%s.%N > \"$2/rank$OMPI_COMM_WORLD_RANK.end\"; echo $rc > \"$2/rank$OMPI_COMM_WORLD_RANK.rc\"' " +
                    KILN_WATCHDOG_WORKER + " " + (timeout_arg < 0 ? std::string("default") : std::to_string(timeout)) + " " + dir + " > " + dir + "/log 2>&1";
  pid_t mpirun = fork();
  if (mpirun == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  Outcome out;
  // Wait until rank 1 is well into training.
  auto give_up = Clock::now() + std::chrono::seconds(120);
  pid_t victim = 0;
  while (Clock::now() < give_up) {
    std::string step = read(dir + "/rank1.step");
    if (!step.empty() && std::stoi(step) >= 10) {
      victim = std::stoi(read(dir + "/rank1.pid"));
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (victim <= 0) {
    kill(-mpirun, SIGKILL);
    waitpid(mpirun, nullptr, 0);
    ADD_FAILURE() << "rank 1 never reached step 10; log:\n" << read(dir + "/log");
    return out;
  }
  kill(victim, sig);
  const double signalled = now_s();
  // mpirun must be gone well within the bound; past it, the test has found a hang.
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout + 30);
  int status = 0;
  while (waitpid(mpirun, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      kill(-mpirun, SIGKILL);
      if (sig == SIGSTOP) kill(victim, SIGKILL);
      waitpid(mpirun, &status, 0);
      ADD_FAILURE() << "the job still ran " << timeout + 30 << " s after the signal: a hang";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (sig == SIGSTOP) kill(victim, SIGKILL);
  out.mpirun_status = status;
  out.log = read(dir + "/log");
  std::string rc = read(dir + "/rank0.rc"), end = read(dir + "/rank0.end");
  if (!rc.empty()) out.rank0_rc = std::stoi(rc);
  if (!end.empty()) out.rank0_after_signal = std::stod(end) - signalled;
  std::printf("[ watchdog ] signal %d: rank 0 exit code %d, %.2f s after the signal (timeout %.0f s)\n", sig,
              out.rank0_rc, out.rank0_after_signal, timeout);
  std::system(("rm -rf " + dir).c_str());
  return out;
}

const std::regex kMessage(R"(kiln: rank 0 of 2: (all_reduce|broadcast|all_gather|reduce_scatter|barrier) of [^\n]* at step \d+ \([a-z]+\) timed out after 3 s[^\n]*\n)");

TEST(Watchdog, KilledRankEndsTheJobWithAMessage) {
  const double timeout = 3;
  Outcome o = run(SIGKILL, timeout);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.log, m, kMessage)) << "no watchdog line from rank 0 in:\n" << o.log;
  std::printf("[ watchdog ] %s", m.str().c_str());
  EXPECT_NE(o.rank0_rc, 0);
  EXPECT_NE(o.rank0_rc, -1) << "rank 0's exit code was not recorded";
  EXPECT_GE(o.rank0_after_signal, timeout - 0.5);
  EXPECT_LE(o.rank0_after_signal, timeout + 10);
  // One line, once: not a cascade of messages.
  EXPECT_EQ(std::distance(std::sregex_iterator(o.log.begin(), o.log.end(), kMessage), std::sregex_iterator()), 1);
}

// A rank that is alive but silent (stopped, deadlocked, swapping) is caught the same way; here rank
// 0's abort ends the job, the stopped rank included.
TEST(Watchdog, SilentRankEndsTheJobWithAMessage) {
  const double timeout = 3;
  Outcome o = run(SIGSTOP, timeout);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(o.log, m, kMessage)) << "no watchdog line from rank 0 in:\n" << o.log;
  EXPECT_TRUE(o.rank0_rc != 0) << "rank 0 exit code " << o.rank0_rc;
}

// The survivor of a dead peer that nothing else ends (here --enable-recovery keeps mpirun from
// doing so) gives up after the default dist.timeout_s, saying every report_every(timeout) seconds
// that it is still waiting, instead of staying silent until the deadline.
TEST(Watchdog, DefaultTimeoutEndsADeadPeersJobAndReportsWhileWaiting) {
  const double timeout = kiln::DistConfig{}.timeout_s;
  EXPECT_LE(timeout, 300) << "a user should not wait longer than a few minutes for a dead peer";
  Outcome o = run(SIGKILL, -1);
  const std::regex waiting(R"(kiln: rank 0 of 2: [^\n]* still waiting after \d+ s for every rank to join; gives up at \d+ s)");
  const auto lines = std::distance(std::sregex_iterator(o.log.begin(), o.log.end(), waiting), std::sregex_iterator());
  EXPECT_GE(lines, 3) << o.log;
  EXPECT_NE(o.rank0_rc, 0);
  EXPECT_GE(o.rank0_after_signal, timeout - 0.5);
  EXPECT_LE(o.rank0_after_signal, timeout + 10);
}

}  // namespace
