// progress.h — rmoe_prepare's progress on stderr (internal to data/): a bar
// redrawn 4 times a second on a terminal, a line every 30 s in a log.
#pragma once
#include <cstdint>

#include "rmoe/core/timer.h"

namespace rmoe {

class Progress {
 public:
  // mode 1: always, 0: never, -1: for long inputs only (>= 16 MB on a
  // terminal, >= 256 MB otherwise; total < 0: unknown size, e.g. stdin).
  Progress(int mode, int64_t total);
  bool on() const { return on_; }
  // `done` bytes so far; shown when the last line is old enough (or force).
  void update(int64_t done, bool force = false);
  void finish(int64_t done);

 private:
  int64_t total_;
  bool tty_ = false, on_ = false, shown_ = false;
  Clock::time_point t0_, last_;
};

}  // namespace rmoe
