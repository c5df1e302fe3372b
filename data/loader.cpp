// loader.cpp — windows, the per-epoch permutation and the prefetch threads
// (see loader.h).
#include "rmoe/data/loader.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <set>
#include <sstream>

#include "rmoe/core/error.h"
#include "rmoe/core/rng.h"
#include "rmoe/core/timer.h"

namespace rmoe {

namespace {

constexpr uint64_t kPermutationStream = 0x7065726d75746531ULL;  // "permute1"

// tokens/targets rows from windows of S + 1 tokens.
void split_windows(const int32_t* windows, int64_t n, int S, int32_t* tokens, int32_t* targets) {
  for (int64_t j = 0; j < n; ++j) {
    const int32_t* w = windows + j * (S + 1);
    std::copy(w, w + S, tokens + j * S);
    std::copy(w + 1, w + S + 1, targets + j * S);
  }
}

}  // namespace

uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key) {
  if (n <= 1) return 0;
  int bits = 64 - std::countl_zero(n - 1);
  bits = std::max(bits + (bits & 1), 2);
  const int half = bits / 2;
  const uint64_t mask = (uint64_t(1) << half) - 1;
  uint64_t x = i;
  do {  // cycle walking: at most ~4 passes on average (domain < 4n)
    uint64_t l = x >> half, r = x & mask;
    for (uint64_t round = 0; round < 6; ++round) {
      const uint64_t f = random_bits(key, round, r) & mask;
      const uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    x = (l << half) | r;
  } while (x >= n);
  return x;
}

ShardBatchSource::ShardBatchSource(const std::string& dir, const LoaderOptions& opts)
    : dataset_(dir), opts_(opts) {
  if (opts.seq_length < 1) throw UsageError("--seq-length=" + std::to_string(opts.seq_length) + " must be >= 1");
  if (opts.global_batch_size < 1)
    throw UsageError("--global-batch-size=" + std::to_string(opts.global_batch_size) + " must be >= 1");
  const int64_t S = opts.seq_length;
  for (Split s : {Split::train, Split::val}) {
    auto& starts = window_start_[int(s)];
    starts.assign(1, 0);
    for (const ShardHeader& h : dataset_.split(s).shards) {
      const int64_t w = (h.token_count - 1) / S;
      if (w < 1)
        throw InputError("shard '" + h.path + "' holds " + std::to_string(h.token_count) +
                         " tokens, fewer than one window of --seq-length+1 = " + std::to_string(S + 1) +
                         "; use a shorter --seq-length or re-run rmoe_prepare with a larger --shard-tokens");
      starts.push_back(starts.back() + w);
    }
  }
  if (opts_.prefetch_steps > 0)
    for (int t = 0; t < std::max(1, opts_.threads); ++t) workers_.emplace_back([this] { worker_loop(); });
}

ShardBatchSource::~ShardBatchSource() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

int64_t ShardBatchSource::train_window(int64_t step, int64_t sequence) const {
  const uint64_t W = uint64_t(num_windows(Split::train));
  const uint64_t g = uint64_t(step) * uint64_t(opts_.global_batch_size) + uint64_t(sequence);
  const uint64_t key = random_bits(opts_.seed, kPermutationStream, g / W);
  return int64_t(permute_index(g % W, W, key));
}

int64_t ShardBatchSource::val_window(int64_t i, int64_t sequence) const {
  const uint64_t W = uint64_t(num_windows(Split::val));
  return int64_t((uint64_t(i) * uint64_t(opts_.global_batch_size) + uint64_t(sequence)) % W);
}

std::shared_ptr<const ShardReader> ShardBatchSource::reader(Split s, size_t shard) const {
  std::lock_guard<std::mutex> lk(readers_mu_);
  const auto key = std::make_pair(int(s), shard);
  auto it = readers_.find(key);
  if (it != readers_.end()) {
    it->second.second = ++reader_clock_;
    return it->second.first;
  }
  if (int64_t(readers_.size()) >= std::max(1, opts_.max_open_shards)) {  // evict the least recently used
    auto lru = std::min_element(readers_.begin(), readers_.end(),
                                [](const auto& a, const auto& b) { return a.second.second < b.second.second; });
    readers_.erase(lru);  // a thread still reading keeps its shared_ptr
  }
  auto r = std::make_shared<const ShardReader>(dataset_.split(s).shards[shard].path);
  readers_[key] = {r, ++reader_clock_};
  return r;
}

void ShardBatchSource::read_window(Split s, int64_t w, int32_t* out) const {
  const auto& starts = window_start_[int(s)];
  RMOE_CHECK(w >= 0 && w < starts.back(), "window " << w << " outside [0, " << starts.back() << ")");
  const size_t shard = size_t(std::upper_bound(starts.begin(), starts.end(), w) - starts.begin() - 1);
  const int64_t offset = (w - starts[shard]) * opts_.seq_length;
  reader(s, shard)->read(offset, opts_.seq_length + 1, out);
}

void ShardBatchSource::read_batch(const Key& k, std::vector<int32_t>& out) const {
  const int64_t len = opts_.seq_length + 1;
  out.resize(size_t(k.n * len));
  for (int64_t j = 0; j < k.n; ++j) read_window(Split::train, train_window(k.step, k.first + j), out.data() + j * len);
}

void ShardBatchSource::check_request(const char* what, int64_t first, int64_t n, int seq_length) const {
  RMOE_CHECK(seq_length == opts_.seq_length,
             what << ": asked for sequences of " << seq_length << " tokens; the loader was opened for "
                  << opts_.seq_length);
  RMOE_CHECK(first >= 0 && n >= 1 && first + n <= opts_.global_batch_size,
             what << ": sequences [" << first << ", " << first + n << ") are outside the global batch of "
                  << opts_.global_batch_size);
}

void ShardBatchSource::fill(int64_t step, int64_t first, int64_t n, int S, int32_t* tokens, int32_t* targets) const {
  check_request("fill", first, n, S);
  RMOE_CHECK(step >= 0, "fill: step " << step << " must be >= 0");
  const auto t0 = Clock::now();
  const Key k{step, first, n};
  std::vector<int32_t> windows;
  std::unique_lock<std::mutex> lk(mu_);
  note_request(k);
  auto it = slots_.find(k);
  if (it != slots_.end() && it->second.state != Slot::queued) {
    const bool was_ready = it->second.state != Slot::reading;
    it->second.wanted = true;  // a thread finishing it must hand it over, not drop it
    done_cv_.wait(lk, [&] { return it->second.state == Slot::ready || it->second.state == Slot::failed; });
    (was_ready ? stats_.ready_hits : stats_.waited_hits)++;
    const std::exception_ptr err = it->second.error;
    windows = std::move(it->second.windows);
    slots_.erase(it);
    if (err) {
      stats_.wait_seconds += seconds_since(t0);
      std::rethrow_exception(err);
    }
  } else {
    if (it != slots_.end()) {  // queued but not started: read it here
      queue_.erase(std::find(queue_.begin(), queue_.end(), k));
      slots_.erase(it);
    }
    ++stats_.misses;
    schedule(k);  // let the threads start on what follows while this one is read
    lk.unlock();
    read_batch(k, windows);
    lk.lock();
  }
  schedule(k);
  stats_.wait_seconds += seconds_since(t0);
  lk.unlock();
  split_windows(windows.data(), n, S, tokens, targets);
}

void ShardBatchSource::fill_validation(int64_t i, int64_t first, int64_t n, int S, int32_t* tokens,
                                       int32_t* targets) const {
  check_request("fill_validation", first, n, S);
  RMOE_CHECK(i >= 0, "fill_validation: batch " << i << " must be >= 0");
  const int64_t len = S + 1;
  std::vector<int32_t> windows(size_t(n * len));
  for (int64_t j = 0; j < n; ++j) read_window(Split::val, val_window(i, first + j), windows.data() + j * len);
  split_windows(windows.data(), n, S, tokens, targets);
}

void ShardBatchSource::note_request(const Key& k) const {
  if (k.step != cur_step_) {
    if (!cur_pattern_.empty() && k.step == cur_step_ + 1) pattern_ = cur_pattern_;
    cur_pattern_.clear();
    cur_step_ = k.step;
  }
  cur_pattern_.emplace_back(k.first, k.n);
}

void ShardBatchSource::schedule(const Key& k) const {
  if (workers_.empty()) return;
  // The keys expected after k, nearest first.
  std::vector<Key> next;
  if (pattern_.empty()) {  // first step seen: assume the rest of this step in slices of n
    for (int64_t f = k.first + k.n; f + k.n <= opts_.global_batch_size; f += k.n) next.push_back({k.step, f, k.n});
    if (int64_t(next.size()) > int64_t(opts_.prefetch_steps) * 64) next.resize(size_t(opts_.prefetch_steps) * 64);
  } else {
    const auto pos = std::find(pattern_.begin(), pattern_.end(), std::make_pair(k.first, k.n));
    size_t idx = pos == pattern_.end() ? pattern_.size() : size_t(pos - pattern_.begin()) + 1;
    int64_t s = k.step;
    const size_t limit = size_t(opts_.prefetch_steps) * pattern_.size();
    while (next.size() < limit) {
      if (idx == pattern_.size()) {
        idx = 0;
        ++s;
      }
      next.push_back({s, pattern_[idx].first, pattern_[idx].second});
      ++idx;
    }
  }
  // Drop what is no longer expected; add what is new, in order.
  const std::set<Key> expected_keys(next.begin(), next.end());
  for (auto it = slots_.begin(); it != slots_.end();) {
    const bool expected = expected_keys.count(it->first) > 0;
    it->second.wanted = expected;
    if (!expected && it->second.state != Slot::reading)
      it = slots_.erase(it);
    else
      ++it;
  }
  queue_.clear();
  int added_keys = 0;
  for (const Key& key : next) {
    auto [it, added] = slots_.try_emplace(key);
    if (it->second.state == Slot::queued) queue_.push_back(key);
    added_keys += added;
  }
  // Wake only as many threads as there is new work (a wake-up of an idle
  // thread that then contends for mu_ costs the training thread time).
  if (added_keys >= int(workers_.size()))
    work_cv_.notify_all();
  else
    for (int i = 0; i < added_keys; ++i) work_cv_.notify_one();
}

void ShardBatchSource::worker_loop() const {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    work_cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const Key k = queue_.front();
    queue_.pop_front();
    slots_[k].state = Slot::reading;
    lk.unlock();
    std::vector<int32_t> windows;
    std::exception_ptr err;
    try {
      read_batch(k, windows);
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    ++stats_.batches_read;
    auto it = slots_.find(k);
    if (it == slots_.end()) continue;
    if (!it->second.wanted) {
      slots_.erase(it);
      continue;
    }
    it->second.windows = std::move(windows);
    it->second.error = err;
    it->second.state = err ? Slot::failed : Slot::ready;
    done_cv_.notify_all();
  }
}

double ShardBatchSource::data_wait_seconds() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_.wait_seconds;
}

ShardBatchSource::Stats ShardBatchSource::stats_locked() const {
  Stats s = stats_;
  s.ready_now = s.reading_now = 0;
  for (const auto& [k, slot] : slots_) {
    if (slot.state == Slot::ready) ++s.ready_now;
    if (slot.state == Slot::reading) ++s.reading_now;
  }
  return s;
}

ShardBatchSource::Stats ShardBatchSource::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_locked();
}

ShardBatchSource::Stats ShardBatchSource::wait_until_ready(int64_t n, double timeout_seconds) const {
  std::unique_lock<std::mutex> lk(mu_);
  // Every finished read notifies done_cv_; a read that finds its slot gone
  // does not, hence the bounded waits.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (true) {
    const Stats s = stats_locked();
    if (s.ready_now >= n || (queue_.empty() && s.reading_now == 0) || std::chrono::steady_clock::now() >= deadline)
      return s;
    done_cv_.wait_for(lk, std::chrono::milliseconds(10));
  }
}

std::string ShardBatchSource::describe() const {
  std::ostringstream os;
  os << dataset_.describe() << "; " << num_windows(Split::train) << " train / " << num_windows(Split::val)
     << " val windows of " << opts_.seq_length + 1 << " tokens, seed " << opts_.seed << ", prefetch "
     << opts_.prefetch_steps << " steps on " << workers_.size() << " threads";
  return os.str();
}

}  // namespace rmoe
