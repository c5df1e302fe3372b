// profile.h — where a training step's time goes (--profile).
//
// Two views of the same wall clock, both off unless enabled:
//  - regions: what part of the model or step runs (attention, router,
//    experts, ...). Model and trainer code open a RegionScope; scopes nest,
//    and each region is charged only its own (self) time, so the regions add
//    up to the time spent inside scopes.
//  - ops: every call through rmoe::ops is timed (the outermost op only) and
//    charged to the op's name within the current region.
// Only the thread that enabled profiling records: an op or scope on another
// thread (inside an OpenMP team) is part of the enclosing op's time.
// Disabled, a scope or op costs one relaxed atomic load.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "rmoe/core/timer.h"

namespace rmoe::profile {

enum class Region : int {
  other,          // in an op or step, outside every named region
  embedding,      // token embedding and its backward
  attention,      // norm, q/k/v/o projections, RoPE, attention
  router,         // router cell, projections, top-k, aux-loss terms
  experts,        // gather, expert FFNs, combine (all-to-all excluded)
  head,           // final norm, LM head, cross-entropy
  optimizer,      // gradient norm, clipping, AdamW
  data,           // waiting for and copying batches
  communication,  // all-to-all of tokens, gradient and statistics all-reduce
  count
};
const char* region_name(Region r);

namespace detail {
extern std::atomic<bool> on;
bool recording_thread();
void push(Region r);
void pop();
void record_op(const char* op, double seconds);
}  // namespace detail

// Starts or stops recording on this thread; either clears what was recorded.
void enable(bool on);
inline bool enabled() { return detail::on.load(std::memory_order_relaxed); }
// Clears what was recorded (keeps recording if enabled).
void reset();
// Stops and restarts recording without clearing it (so that evaluation and
// checkpoint saves between steps are left out).
inline void pause() { detail::on.store(false); }
void resume();

class RegionScope {
 public:
  explicit RegionScope(Region r) : active_(enabled() && detail::recording_thread()) {
    if (active_) detail::push(r);
  }
  ~RegionScope() {
    if (active_) detail::pop();
  }
  RegionScope(const RegionScope&) = delete;
  RegionScope& operator=(const RegionScope&) = delete;

 private:
  bool active_;
};

// Times one op call (used by rmoe::ops' dispatch). Nested op calls are part
// of the outermost one.
class OpTimer {
 public:
  explicit OpTimer(const char* op) : op_(op), counted_(enabled() && detail::recording_thread()) {
    if (!counted_) return;
    outermost_ = depth_++ == 0;
    if (outermost_) t0_ = Clock::now();
  }
  ~OpTimer() {
    if (!counted_) return;
    --depth_;
    if (outermost_) detail::record_op(op_, seconds_since(t0_));
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  const char* op_;
  bool counted_, outermost_ = false;
  Clock::time_point t0_;
  static thread_local int depth_;
};

struct RegionTime {
  Region region;
  double seconds;  // self time
};
struct OpTime {
  Region region;
  std::string op;
  double seconds;
  int64_t calls;
};
std::vector<RegionTime> region_times();  // every region, in enum order
std::vector<OpTime> op_times();          // by time, largest first

// The table --profile prints: per region (ms per step, % of the step, its
// top ops) and the ten most expensive ops, for `steps` steps that took
// `step_seconds` in total.
std::string report(int64_t steps, double step_seconds);

}  // namespace rmoe::profile
