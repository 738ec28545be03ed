#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/log.h"

namespace kiln {

Progress::Progress(int64_t total_steps, int64_t first_step, int64_t every, bool enabled)
    : total_(total_steps), first_(first_step), every_(every > 0 ? every : 1), enabled_(enabled),
      tty_(isatty(fileno(stderr)) != 0), start_(Clock::now()), last_draw_(start_) {}

std::string Progress::format_duration(double s) {
  if (s < 0 || s != s) return "?";
  auto t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

void Progress::step(int64_t step, double loss, int64_t tokens, const std::string& extra) {
  if (!enabled_) return;
  tokens_since_start_ += tokens;
  // A short moving average: single micro-batch losses are noisy on small batches.
  loss_ema_ = have_ema_ ? 0.9 * loss_ema_ + 0.1 * loss : loss;
  have_ema_ = true;
  auto now = Clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  int64_t done = step - first_;
  double per_step = done > 0 ? elapsed / double(done) : 0;
  double eta = per_step * double(total_ - step);
  double tps = elapsed > 0 ? double(tokens_since_start_) / elapsed : 0;
  std::string line = fmt::format("step {}/{} loss {:.4f} (avg {:.4f}) {:.0f} tok/s elapsed {} eta {}{}{}",
                                 step, total_, loss, loss_ema_, tps, format_duration(elapsed),
                                 format_duration(eta), extra.empty() ? "" : " ", extra);
  if (tty_) {
    if (step != total_ && std::chrono::duration<double>(now - last_draw_).count() < 0.2) return;
    last_draw_ = now;
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    std::fflush(stderr);
    line_open_ = true;
    if (step == total_) break_line();
  } else if (step % every_ == 0 || step == total_ || step == first_ + 1) {
    log::info("{}", line);
  }
}

void Progress::break_line() {
  if (line_open_) {
    std::fputc('\n', stderr);
    line_open_ = false;
  }
}

}  // namespace kiln
