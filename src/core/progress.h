// The training progress report: on a terminal, one line rewritten in place (step/total, loss,
// tokens/s, ETA); when stderr is not a terminal (batch logs, Slurm), a plain log line every
// `every` steps, so log files stay readable and greppable.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace kiln {

class Progress {
 public:
  Progress(int64_t total_steps, int64_t first_step, int64_t every, bool enabled);
  // tokens: tokens processed by the whole job in this step (all ranks).
  void step(int64_t step, double loss, int64_t tokens, const std::string& extra = "");
  // Ends the in-place line before other output (evaluation results, warnings).
  void break_line();
  bool is_terminal() const { return tty_; }
  static std::string format_duration(double seconds);  // "1h02m", "3m05s", "12s"

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_, first_, every_;
  bool enabled_, tty_, line_open_ = false;
  Clock::time_point start_, last_draw_;
  int64_t tokens_since_start_ = 0;
  double loss_ema_ = 0;
  bool have_ema_ = false;
};

}  // namespace kiln
