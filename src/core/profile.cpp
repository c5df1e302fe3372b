// profile.cpp — the --profile recorder (profile.h).
#include "rmoe/core/profile.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <thread>
#include <utility>

namespace rmoe::profile {

namespace detail {
std::atomic<bool> on{false};
}  // namespace detail

thread_local int OpTimer::depth_ = 0;

namespace {

std::atomic<std::thread::id> recorder{};  // the thread that enabled profiling

bool recording_thread_set() { return recorder.load() != std::thread::id{}; }

struct Open {
  Region region;
  Clock::time_point t0;
  double child_seconds;  // time in scopes opened inside this one
};
std::vector<Open> open_scopes;  // touched by the recording thread only
double region_seconds[int(Region::count)] = {};
// (region, op name) -> (seconds, calls). Op names are the dispatch's string
// literals, one pointer per op.
std::map<std::pair<int, const char*>, std::pair<double, int64_t>> ops_recorded;

}  // namespace

const char* region_name(Region r) {
  static const char* const names[] = {"other",     "embedding", "attention", "router",       "experts",
                                      "head",      "optimizer", "data",      "communication"};
  static_assert(sizeof(names) / sizeof(names[0]) == size_t(Region::count));
  return names[int(r)];
}

namespace detail {

bool recording_thread() { return recorder.load(std::memory_order_relaxed) == std::this_thread::get_id(); }

void push(Region r) { open_scopes.push_back({r, Clock::now(), 0.0}); }

void pop() {
  if (open_scopes.empty()) return;  // opened before reset()
  const Open o = open_scopes.back();
  open_scopes.pop_back();
  const double elapsed = seconds_since(o.t0);
  region_seconds[int(o.region)] += elapsed - o.child_seconds;
  if (!open_scopes.empty()) open_scopes.back().child_seconds += elapsed;
}

void record_op(const char* op, double seconds) {
  const Region r = open_scopes.empty() ? Region::other : open_scopes.back().region;
  auto& e = ops_recorded[{int(r), op}];
  e.first += seconds;
  e.second += 1;
}

}  // namespace detail

void enable(bool on) {
  reset();
  recorder.store(on ? std::this_thread::get_id() : std::thread::id{});
  detail::on.store(on);
}

void resume() {
  if (recording_thread_set()) detail::on.store(true);
}

void reset() {
  // Scopes open now keep running but start counting from here.
  for (auto& o : open_scopes) {
    o.t0 = Clock::now();
    o.child_seconds = 0;
  }
  std::fill(std::begin(region_seconds), std::end(region_seconds), 0.0);
  ops_recorded.clear();
}

std::vector<RegionTime> region_times() {
  std::vector<RegionTime> v;
  for (int r = 0; r < int(Region::count); ++r) v.push_back({Region(r), region_seconds[r]});
  return v;
}

std::vector<OpTime> op_times() {
  std::vector<OpTime> v;
  for (const auto& [key, e] : ops_recorded) v.push_back({Region(key.first), key.second, e.first, e.second});
  std::sort(v.begin(), v.end(), [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return v;
}

std::string report(int64_t steps, double step_seconds) {
  if (steps <= 0) return "profile: no steps recorded\n";
  const double per = 1e3 / double(steps);  // seconds in total -> ms per step
  const double step_ms = step_seconds * per;
  auto pct = [&](double s) { return step_ms > 0 ? 100.0 * s * per / step_ms : 0.0; };
  const auto ops = op_times();
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "profile: %lld steps, %.2f ms per step (this rank)\n", static_cast<long long>(steps),
                step_ms);
  out += line;
  std::snprintf(line, sizeof line, "  %-14s %9s %6s  %s\n", "region", "ms/step", "%", "its top ops, ms/step");
  out += line;
  double in_regions = 0;
  auto regions = region_times();
  std::stable_sort(regions.begin(), regions.end(),
                   [](const RegionTime& a, const RegionTime& b) { return a.seconds > b.seconds; });
  for (const auto& rt : regions) {
    in_regions += rt.seconds;
    if (rt.seconds <= 0) continue;
    std::string top;
    int shown = 0;
    for (const auto& o : ops)
      if (o.region == rt.region && shown < 3) {
        char b[128];
        std::snprintf(b, sizeof b, "%s%s %.2f", shown ? ", " : "", o.op.c_str(), o.seconds * per);
        top += b;
        ++shown;
      }
    std::snprintf(line, sizeof line, "  %-14s %9.2f %6.1f  %s\n", region_name(rt.region), rt.seconds * per,
                  pct(rt.seconds), top.c_str());
    out += line;
  }
  const double outside = step_seconds - in_regions;
  std::snprintf(line, sizeof line, "  %-14s %9.2f %6.1f  (step bookkeeping outside every region)\n", "unaccounted",
                outside * per, pct(outside));
  out += line;
  std::snprintf(line, sizeof line, "  %-24s %-14s %10s %9s %6s\n", "op (top 10)", "region", "calls/step", "ms/step",
                "%");
  out += line;
  for (size_t i = 0; i < ops.size() && i < 10; ++i) {
    std::snprintf(line, sizeof line, "  %-24s %-14s %10.1f %9.2f %6.1f\n", ops[i].op.c_str(),
                  region_name(ops[i].region), double(ops[i].calls) / double(steps), ops[i].seconds * per,
                  pct(ops[i].seconds));
    out += line;
  }
  return out;
}

}  // namespace rmoe::profile
