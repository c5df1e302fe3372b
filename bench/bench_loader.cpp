// bench_loader — rmoe_prepare throughput (MB/s of text) and loader throughput
// (tokens/s) at the medium config's shape (seq 512, global batch 48, micro-
// batch 4), against what training consumes, and the time a step waits for
// data when the loader runs beside a (simulated) training step.
//
// Usage: bench_loader [--text-mb N] [--sp-mb N] [--sp-vocab N] [--steps N]
//                     [--step-seconds T] [--dir DIR] [--keep]
//   --text-mb       generated text for the byte dataset (default 64)
//   --sp-mb         text encoded with sentencepiece (default 16; 0 skips)
//   --step-seconds  simulated training step (default 0.5; measure yours with
//                   rmoe_train --config configs/medium_char_rmoe.ini)
// Text is generated (Zipf-distributed pseudo-words), nothing is downloaded.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "rmoe/data/loader.h"
#include "rmoe/data/prepare.h"
#include "rmoe/core/rng.h"
#include "rmoe/core/timer.h"

using namespace rmoe;
namespace fs = std::filesystem;

namespace {

// ~`bytes` of text: words from a 20k-word Zipf lexicon, sentences, paragraphs.
void write_text(const std::string& path, int64_t bytes, uint64_t seed) {
  static std::vector<std::string> lexicon;
  static std::vector<double> cdf;
  if (lexicon.empty()) {
    const char* syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu", "th", "er",
                         "an", "in", "on", "st", "re", "de", "al", "ou", "es", "ti", "ng", "ch"};
    double sum = 0;
    for (int w = 0; w < 20000; ++w) {
      std::string s;
      const int n = 1 + int(random_bits(7, 1, w) % 4);
      for (int k = 0; k < n; ++k) s += syl[random_bits(7, 2, uint64_t(w) * 8 + k) % 24];
      lexicon.push_back(s);
      sum += 1.0 / (w + 1);
      cdf.push_back(sum);
    }
    for (double& c : cdf) c /= sum;
  }
  std::string text;
  text.reserve(size_t(bytes) + 64);
  for (uint64_t i = 0; int64_t(text.size()) < bytes; ++i) {
    const double u = random_uniform(seed, 3, i);
    text += lexicon[size_t(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin())];
    const uint64_t r = random_bits(seed, 4, i) % 100;
    text += r < 85 ? " " : r < 93 ? ", " : r < 99 ? ".\n" : ".\n\n";
  }
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

int main(int argc, char** argv) {
  double text_mb = 64, sp_mb = 16, step_seconds = 0.5;
  int sp_vocab = 8000, steps = 200;
  std::string dir = (fs::temp_directory_path() / "rmoe_bench_loader").string();
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    auto val = [&] { return i + 1 < argc ? argv[++i] : ""; };
    if (!std::strcmp(argv[i], "--text-mb")) text_mb = std::atof(val());
    else if (!std::strcmp(argv[i], "--sp-mb")) sp_mb = std::atof(val());
    else if (!std::strcmp(argv[i], "--sp-vocab")) sp_vocab = std::atoi(val());
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(val());
    else if (!std::strcmp(argv[i], "--step-seconds")) step_seconds = std::atof(val());
    else if (!std::strcmp(argv[i], "--dir")) dir = val();
    else if (!std::strcmp(argv[i], "--keep")) keep = true;
    else {
      std::fprintf(stderr, "bench_loader: unknown argument %s (see the file header)\n", argv[i]);
      return 2;
    }
  }
  fs::remove_all(dir);
  fs::create_directories(dir + "/text");
  const int files = 8;
  for (int f = 0; f < files; ++f)
    write_text(dir + "/text/" + std::to_string(f) + ".txt", int64_t(text_mb * 1e6 / files), 100 + f);
  std::printf("bench_loader: %d hardware threads; text in %s\n", int(std::thread::hardware_concurrency()), dir.c_str());

  // ---- rmoe_prepare, byte --------------------------------------------------------
  PrepareOptions o;
  o.inputs = {dir + "/text"};
  o.output = dir + "/byte";
  o.tokenizer = "byte";
  o.progress = 0;
  o.shard_tokens = 16'000'000;  // several shards
  PrepareReport r = prepare_dataset(o);
  std::printf("prepare byte:          %7.1f MB in %6.2f s = %7.1f MB/s (%5.1fM tokens/s), %lld+%lld shards\n",
              r.summary.input_bytes / 1e6, r.seconds, r.summary.input_bytes / 1e6 / r.seconds,
              (r.summary.train_tokens + r.summary.val_tokens) / 1e6 / r.seconds,
              static_cast<long long>(r.summary.train_shards), static_cast<long long>(r.summary.val_shards));

  // ---- rmoe_prepare, sentencepiece (train on 4 MB, then encode sp_mb) --------------
  if (sp_mb > 0) {
    write_text(dir + "/sp_train.txt", 4'000'000, 7);
    const std::string sp_in = dir + "/sp_text";
    fs::create_directories(sp_in);
    for (int f = 0; f < files; ++f) write_text(sp_in + "/" + std::to_string(f) + ".txt", int64_t(sp_mb * 1e6 / files), 300 + f);
    PrepareOptions t = o;
    t.inputs = {dir + "/sp_train.txt"};
    t.output = dir + "/sp_model_ds";
    t.tokenizer = "sentencepiece";
    t.vocab_size = sp_vocab;
    const PrepareReport tr = prepare_dataset(t);
    std::printf("sentencepiece bpe training (vocabulary %d) on 4 MB: %.1f s\n", sp_vocab, tr.tokenizer_train_seconds);
    std::ofstream(dir + "/sp.model", std::ios::binary) << ShardDataset(t.output).tokenizer().serialize();
    PrepareOptions e = o;
    e.inputs = {sp_in};
    e.output = dir + "/sp";
    e.tokenizer = "sentencepiece";
    e.tokenizer_model = dir + "/sp.model";
    const PrepareReport er = prepare_dataset(e);
    std::printf("prepare sentencepiece: %7.1f MB in %6.2f s = %7.1f MB/s (%5.2fM tokens/s, %.2f bytes/token)\n",
                er.summary.input_bytes / 1e6, er.seconds, er.summary.input_bytes / 1e6 / er.seconds,
                (er.summary.train_tokens + er.summary.val_tokens) / 1e6 / er.seconds,
                double(er.summary.input_bytes) / double(er.summary.train_tokens + er.summary.val_tokens));
  }

  // ---- loader ------------------------------------------------------------------
  const int S = 512;
  const int64_t G = 48, mb = 4;
  const double tokens_per_step = double(G) * S;
  std::vector<int32_t> tok(size_t(mb * S)), tgt(size_t(mb * S));
  auto run_steps = [&](const ShardBatchSource& src, int64_t first_step, int n, double sleep_s) {
    const auto t0 = Clock::now();
    for (int64_t s = first_step; s < first_step + n; ++s) {
      for (int64_t f = 0; f < G; f += mb) src.fill(s, f, mb, S, tok.data(), tgt.data());
      if (sleep_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(sleep_s));
    }
    return seconds_since(t0);
  };
  for (int prefetch : {0, 2}) {
    LoaderOptions lo;
    lo.seq_length = S;
    lo.global_batch_size = G;
    lo.seed = 1;
    lo.prefetch_steps = prefetch;
    ShardBatchSource src(o.output, lo);
    const double sec = run_steps(src, 0, steps, 0);
    std::printf("loader %-24s %6d steps: %7.2f M tokens/s (%.2f ms/step of %d x %d tokens)\n",
                prefetch ? "prefetch 2 steps, 2 thr:" : "synchronous:", steps, steps * tokens_per_step / sec / 1e6,
                1e3 * sec / steps, int(G), S);
  }
  {
    LoaderOptions lo;
    lo.seq_length = S;
    lo.global_batch_size = G;
    lo.seed = 1;
    ShardBatchSource src(o.output, lo);
    const int n = std::max(10, std::min(steps, int(20 / std::max(step_seconds, 1e-3))));
    run_steps(src, 0, 2, 0);  // the loader learns the slice pattern
    const double w0 = src.data_wait_seconds();
    const double sec = run_steps(src, 2, n, step_seconds);
    const double wait = src.data_wait_seconds() - w0;
    const auto st = src.stats();
    std::printf("training consumes %.0f tokens/step = %.0f tokens/s at %.3f s/step\n", tokens_per_step,
                tokens_per_step / step_seconds, step_seconds);
    std::printf("simulated training, %d steps of %.3f s: data wait %.3f ms/step = %.3f%% of step time "
                "(ready %lld, waited %lld, missed %lld)\n",
                n, step_seconds, 1e3 * wait / n, 100 * wait / sec, static_cast<long long>(st.ready_hits),
                static_cast<long long>(st.waited_hits), static_cast<long long>(st.misses));
  }
  if (!keep) fs::remove_all(dir);
  return 0;
}
