// loader.h — the BatchSource over a dataset directory (`--data-path DIR`),
// with background prefetch (docs/DATA.md).
//
// Windows. A shard of n tokens holds floor((n - 1) / S) windows of S + 1
// tokens at stride S (tokens = window[0, S), targets = window[1, S + 1)),
// never crossing a shard's end; the split's window ids are the shards'
// windows concatenated in shard order. Every shard must hold >= 1 window.
//
// Order. Training sequence g = step * G + j (G = global batch size, j the
// index inside the global batch) reads window
//   perm_{seed, e}(g mod W),  e = g / W  (the epoch), W = number of windows,
// where perm_{seed,e} is a keyed Feistel bijection of [0, W) (cycle-walking,
// O(1) memory). So the global batch of a step depends only on (seed, step):
// ranks that fill disjoint slices [first, first + n) of it read disjoint
// windows, every window is read once per epoch, and a run resumed at step N
// reads exactly what it would have read. Validation batch i, sequence j reads
// val window (i * G + j) mod W_val: a fixed order.
//
// Prefetch. fill() learns the (first, n) slices one step asks for (the
// trainer's micro-batches of this rank's slice) and, from the second step on,
// background threads read the next `prefetch_steps` steps of those slices
// into a bounded map; fill() takes a ready batch, waits for one being read,
// or reads synchronously. Memory: prefetch_steps * (slice sequences) *
// (S + 1) * 4 bytes plus at most max_open_shards open files, whatever the
// dataset size. A read error in a thread (checksum, bad id) is rethrown by
// the fill() that wanted that batch, naming the file. fill()/fill_validation()
// must be called from one thread at a time. The threads share the open
// ShardReaders; their HDF5 reads are serialised by core/h5's process-wide
// lock (shard.h), which also covers a checkpoint written meanwhile.
//
// Tested by tests/test_data.cpp; measured by bench/bench_loader.cpp.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rmoe/data/batch_source.h"
#include "rmoe/data/dataset.h"

namespace rmoe {

// A bijection of [0, n) keyed by `key` (a 6-round Feistel network on the
// smallest even power of two >= n, with cycle walking). n >= 1, i < n.
uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key);

struct LoaderOptions {
  int seq_length = 0;              // S
  int64_t global_batch_size = 0;   // G sequences per step
  uint64_t seed = 0;
  int prefetch_steps = 2;          // steps read ahead (0: no background threads)
  int threads = 2;                 // background reader threads
  int max_open_shards = 64;        // open shard files kept (LRU)
};

class ShardBatchSource final : public BatchSource {
 public:
  // Opens and validates the dataset (ShardDataset) and that every shard holds
  // at least one window; throws InputError naming the file otherwise.
  ShardBatchSource(const std::string& dir, const LoaderOptions& opts);
  ~ShardBatchSource() override;

  int vocab_size() const override { return dataset_.vocab_size(); }
  void fill(int64_t step, int64_t first, int64_t n, int seq_length, int32_t* tokens,
            int32_t* targets) const override;
  void fill_validation(int64_t i, int64_t first, int64_t n, int seq_length, int32_t* tokens,
                       int32_t* targets) const override;
  std::string describe() const override;
  bool byte_level() const override { return dataset_.tokenizer().name() == "byte"; }
  double data_wait_seconds() const override;

  const ShardDataset& dataset() const { return dataset_; }
  int64_t num_windows(Split s) const { return window_start_[int(s)].back(); }
  // The window id read by sequence `sequence` of step `step` (training) or of
  // validation batch i.
  int64_t train_window(int64_t step, int64_t sequence) const;
  int64_t val_window(int64_t i, int64_t sequence) const;
  // The S + 1 tokens of window w of split s.
  void read_window(Split s, int64_t w, int32_t* out) const;

  struct Stats {
    int64_t ready_hits = 0;    // fill() found its batch already read
    int64_t waited_hits = 0;   // fill() waited for a batch being read
    int64_t misses = 0;        // fill() read its batch itself
    int64_t ready_now = 0;     // batches read ahead and waiting now
    int64_t reading_now = 0;   // batches being read now
    int64_t batches_read = 0;  // by the background threads
    double wait_seconds = 0;   // total time fill() spent getting its data
  };
  Stats stats() const;
  // Blocks until at least n batches are read ahead and waiting, or until no
  // read is queued or running (no more will arrive), or timeout_seconds pass;
  // returns stats() at that moment. Lets a caller (a test) wait for the
  // background threads instead of guessing how long they need.
  Stats wait_until_ready(int64_t n, double timeout_seconds) const;

 private:
  struct Key {
    int64_t step, first, n;
    auto operator<=>(const Key&) const = default;
  };
  struct Slot {
    enum State { queued, reading, ready, failed } state = queued;
    bool wanted = true;
    std::vector<int32_t> windows;  // [n, S + 1]
    std::exception_ptr error;
  };

  void check_request(const char* what, int64_t first, int64_t n, int seq_length) const;
  void read_batch(const Key& k, std::vector<int32_t>& out) const;  // training windows of k
  std::shared_ptr<const ShardReader> reader(Split s, size_t shard) const;
  void note_request(const Key& k) const;  // under mu_
  void schedule(const Key& k) const;      // under mu_
  void worker_loop() const;
  Stats stats_locked() const;  // under mu_

  ShardDataset dataset_;
  LoaderOptions opts_;
  std::vector<int64_t> window_start_[2];  // per split: [shards + 1] prefix sums of windows

  mutable std::mutex readers_mu_;
  mutable std::map<std::pair<int, size_t>, std::pair<std::shared_ptr<const ShardReader>, uint64_t>> readers_;
  mutable uint64_t reader_clock_ = 0;

  mutable std::mutex mu_;
  mutable std::condition_variable work_cv_, done_cv_;
  mutable std::map<Key, Slot> slots_;
  mutable std::deque<Key> queue_;  // queued keys, in the order they will be wanted
  mutable int64_t cur_step_ = -1;
  mutable std::vector<std::pair<int64_t, int64_t>> cur_pattern_, pattern_;  // (first, n) per step
  mutable Stats stats_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace rmoe
