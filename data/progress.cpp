// progress.cpp — see progress.h.
#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

namespace rmoe {

Progress::Progress(int mode, int64_t total) : total_(total) {
  tty_ = ::isatty(2);
  on_ = mode == 1 ||
        (mode < 0 && (total < 0 || total >= (int64_t(16) << 20)) && (tty_ || total >= (int64_t(256) << 20)));
  t0_ = last_ = Clock::now();
}

void Progress::update(int64_t done, bool force) {
  if (!on_) return;
  const auto now = Clock::now();
  if (!force && seconds_since(last_) < (tty_ ? 0.25 : 30.0)) return;
  last_ = now;
  const double el = std::max(1e-9, seconds_since(t0_)), rate = done / el / 1e6;
  char line[160];
  if (total_ > 0) {
    const double frac = std::min(1.0, double(done) / double(total_));
    const int width = 30, fill = int(frac * width);
    std::snprintf(line, sizeof line, "[%s%s] %5.1f%% %.1f/%.1f MB %.1f MB/s eta %.0fs",
                  std::string(size_t(fill), '#').c_str(), std::string(size_t(width - fill), '.').c_str(),
                  100 * frac, done / 1e6, total_ / 1e6, rate, rate > 0 ? (total_ - done) / 1e6 / rate : 0.0);
  } else {
    std::snprintf(line, sizeof line, "%.1f MB read, %.1f MB/s", done / 1e6, rate);
  }
  std::fprintf(stderr, tty_ ? "\r%s\033[K" : "%s\n", line);
  shown_ = true;
}

void Progress::finish(int64_t done) {
  if (!on_) return;
  update(done, true);
  if (tty_ && shown_) std::fprintf(stderr, "\n");
}

}  // namespace rmoe
