// timer.h — wall-clock intervals, the one way rmoe measures them.
//
//   const auto t0 = Clock::now();
//   ...
//   const double s = seconds_since(t0);
#pragma once
#include <chrono>

namespace rmoe {

using Clock = std::chrono::steady_clock;  // monotonic: unaffected by changes of the system time

// Seconds from t0 to now.
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace rmoe
