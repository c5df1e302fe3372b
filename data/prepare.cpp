// prepare.cpp — rmoe_prepare's orchestration (see prepare.h): options ->
// inputs (text_input.h) -> tokenizer -> staging shards, encoded in parallel
// -> train/val shards -> dataset.h5, all inside a StagedDirectory
// (staging.h) that replaces the output only when complete.
#include "rmoe/data/prepare.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>

#include "progress.h"
#include "rmoe/core/error.h"
#include "rmoe/core/timer.h"
#include "rmoe/data/staging.h"
#include "rmoe/data/text_input.h"

namespace rmoe {

namespace fs = std::filesystem;

namespace {

std::string shard_name(int64_t i) {
  char name[32];
  std::snprintf(name, sizeof name, "%05lld.h5", static_cast<long long>(i));
  return name;
}

// ---- staging shards -----------------------------------------------------------

// The whole token stream in shards of exactly shard_tokens (the last shorter).
class StagingSink {
 public:
  StagingSink(std::string dir, const Tokenizer& tok, int64_t shard_tokens, int64_t chunk)
      : dir_(std::move(dir)), tok_(tok), shard_tokens_(shard_tokens), chunk_(chunk) {}

  void append(const std::vector<int32_t>& ids) {
    if (ids.empty()) return;
    if (at_doc_start_) {
      doc_starts_.push_back(total_);
      at_doc_start_ = false;
    }
    write(ids.data(), int64_t(ids.size()));
  }
  void end_document() {
    if (at_doc_start_) return;  // nothing since the last end
    const int32_t eod = tok_.eod_id();
    write(&eod, 1);
    at_doc_start_ = true;
  }
  void finish() { close_current(); }

  int64_t total() const { return total_; }
  int64_t num_shards() const { return next_index_; }
  const std::vector<int64_t>& doc_starts() const { return doc_starts_; }
  std::string path(int64_t i) const { return (fs::path(dir_) / shard_name(i)).string(); }
  // Document starts in [lo, hi), relative to lo.
  std::vector<int64_t> doc_offsets(int64_t lo, int64_t hi) const {
    std::vector<int64_t> out;
    for (auto it = std::lower_bound(doc_starts_.begin(), doc_starts_.end(), lo);
         it != doc_starts_.end() && *it < hi; ++it)
      out.push_back(*it - lo);
    return out;
  }

 private:
  void write(const int32_t* p, int64_t n) {
    while (n > 0) {
      if (!cur_ || cur_->size() == shard_tokens_) {
        close_current();
        cur_ = std::make_unique<ShardWriter>(path(next_index_), tok_, chunk_);
        cur_start_ = total_;
        ++next_index_;
      }
      const int64_t take = std::min(n, shard_tokens_ - cur_->size());
      cur_->append(p, take);
      p += take;
      n -= take;
      total_ += take;
    }
  }
  void close_current() {
    if (!cur_) return;
    cur_->finish(doc_offsets(cur_start_, cur_start_ + cur_->size()));
    cur_.reset();
  }

  std::string dir_;
  const Tokenizer& tok_;
  int64_t shard_tokens_, chunk_;
  std::unique_ptr<ShardWriter> cur_;
  int64_t cur_start_ = 0, next_index_ = 0, total_ = 0;
  std::vector<int64_t> doc_starts_;
  bool at_doc_start_ = true;
};

// Encodes batches of lines on `threads` threads, in order, into the sink.
class BatchEncoder {
 public:
  BatchEncoder(const Tokenizer& tok, StagingSink& sink, int threads) : tok_(tok), sink_(sink), threads_(threads) {}
  void line(std::string_view s) {
    items_.push_back({std::string(s), false});
    bytes_ += s.size();
    if (bytes_ >= (size_t(4) << 20) || items_.size() >= 65536) flush();
  }
  void doc_end() { items_.push_back({"", true}); }
  void flush() {
    ids_.resize(items_.size());
    std::exception_ptr err;
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads_)
    for (int64_t i = 0; i < int64_t(items_.size()); ++i) {
      try {
        ids_[size_t(i)].clear();
        if (!items_[size_t(i)].text.empty()) tok_.encode(items_[size_t(i)].text, ids_[size_t(i)]);
      } catch (...) {
#pragma omp critical(rmoe_prepare_error)
        if (!err) err = std::current_exception();
      }
    }
    if (err) std::rethrow_exception(err);
    for (size_t i = 0; i < items_.size(); ++i) {
      sink_.append(ids_[i]);
      if (items_[i].doc_end) sink_.end_document();
    }
    items_.clear();
    bytes_ = 0;
  }

 private:
  struct Item {
    std::string text;
    bool doc_end;
  };
  const Tokenizer& tok_;
  StagingSink& sink_;
  int threads_;
  std::vector<Item> items_;
  std::vector<std::vector<int32_t>> ids_;
  size_t bytes_ = 0;
};

// Copies stream tokens [lo, hi) from the staging shards into a new shard.
void copy_range(const StagingSink& staging, int64_t shard_tokens, int64_t lo, int64_t hi, const std::string& out,
                const Tokenizer& tok, int64_t chunk) {
  ShardWriter w(out, tok, std::min(chunk, hi - lo));
  std::vector<int32_t> buf(size_t(1) << 20);
  std::unique_ptr<ShardReader> r;
  int64_t r_index = -1;
  for (int64_t p = lo; p < hi;) {
    const int64_t s = p / shard_tokens;
    if (s != r_index) {
      r = std::make_unique<ShardReader>(staging.path(s));
      r_index = s;
    }
    const int64_t n = std::min({int64_t(buf.size()), hi - p, (s + 1) * shard_tokens - p});
    r->read(p - s * shard_tokens, n, buf.data());
    w.append(buf.data(), n);
    p += n;
  }
  w.finish(staging.doc_offsets(lo, hi));
}


// ---- the steps of prepare_dataset ------------------------------------------------

// Every option alone and in combination; UsageError naming the first bad one.
void check_options(const PrepareOptions& o) {
  if (o.output.empty()) throw UsageError("--output is required: the dataset directory to create");
  if (o.tokenizer != "byte" && o.tokenizer != "sentencepiece")
    throw UsageError("--tokenizer=" + o.tokenizer + ": allowed: byte, sentencepiece");
  if (o.tokenizer == "byte" && (o.vocab_size != 0 || !o.tokenizer_model.empty()))
    throw UsageError(std::string(o.vocab_size != 0 ? "--vocab-size" : "--tokenizer-model") +
                     " applies to --tokenizer sentencepiece only (byte has vocabulary 256)");
  if (!o.tokenizer_model.empty() && o.vocab_size != 0)
    throw UsageError("--vocab-size cannot be combined with --tokenizer-model (the model fixes the vocabulary)");
  if (o.model_type != "bpe" && o.model_type != "unigram")
    throw UsageError("--model-type=" + o.model_type + ": allowed: bpe, unigram");
  if (o.val_tokens < 0) throw UsageError("--val-tokens=" + std::to_string(o.val_tokens) + " must be >= 1");
  if (o.val_tokens == 0 && !(o.val_fraction > 0 && o.val_fraction < 1))
    throw UsageError("--val-fraction=" + std::to_string(o.val_fraction) + " must be in (0, 1)");
  if (o.shard_tokens < 16) throw UsageError("--shard-tokens=" + std::to_string(o.shard_tokens) + " must be >= 16");
}

// Trains a SentencePiece model on the inputs' lines. Standard input is kept
// in tmp/stdin.txt first (training reads the inputs twice; `inputs` then
// names that file).
std::unique_ptr<Tokenizer> train_tokenizer(const PrepareOptions& o, std::vector<InputFile>& inputs,
                                           const std::string& tmp, int threads) {
  for (InputFile& f : inputs) {
    if (!f.path.empty()) continue;
    const std::string spool = (fs::path(tmp) / "stdin.txt").string();
    f.size = spool_standard_input(spool);
    f.path = spool;
  }
  SentencePieceTrainOptions so;
  so.vocab_size = o.vocab_size > 0 ? o.vocab_size : 8000;
  so.model_type = o.model_type;
  so.max_sentences = o.max_sentences;
  so.num_threads = std::clamp(threads, 1, 128);
  so.seed = o.seed;
  if (o.progress != 0)
    std::fprintf(stderr, "rmoe_prepare: training sentencepiece (%s, vocabulary %d) on up to %lld sentences\n",
                 so.model_type.c_str(), so.vocab_size, static_cast<long long>(so.max_sentences));
  InputReader reader(inputs, /*lines=*/true, o.split_blank_lines, /*require_utf8=*/true, /*forbid_nul=*/false);
  auto next_sentence = [&](std::string& s) {
    std::string_view line;
    bool doc_end = false;
    while (reader.next(&line, &doc_end)) {
      if (doc_end) continue;
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
      if (line.empty()) continue;
      if (line.size() > 4000) {  // sentencepiece skips long sentences: give it a UTF-8-clean prefix
        size_t cut = 4000;
        while (cut > 3996 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
        line = line.substr(0, cut);
      }
      s.assign(line);
      return true;
    }
    return false;
  };
  return train_sentencepiece(next_sentence, so);
}

// The whole token stream of the inputs into `sink` (staging shards), encoded
// on `threads` threads; total_bytes (-1: unknown) sizes the progress bar.
// Records the input bytes.
void encode_inputs(const PrepareOptions& o, const std::vector<InputFile>& inputs, int64_t total_bytes,
                   const Tokenizer& tok, int threads, StagingSink& sink, PrepareReport& rep) {
  const bool byte = tok.name() == "byte";
  InputReader reader(inputs, /*lines=*/!byte, o.split_blank_lines, /*require_utf8=*/!byte, /*forbid_nul=*/byte);
  BatchEncoder enc(tok, sink, threads);
  Progress progress(o.progress, total_bytes);
  std::string_view line;
  bool doc_end = false;
  while (reader.next(&line, &doc_end)) {
    if (doc_end)
      enc.doc_end();
    else
      enc.line(line);
    progress.update(reader.bytes_read());
  }
  enc.flush();
  sink.finish();
  progress.finish(reader.bytes_read());
  rep.summary.input_bytes = reader.bytes_read();
}

// Split: the last V tokens of the stream are validation. Each split's shards
// of shard_tokens (the last takes the remainder) into tmp/train, tmp/val;
// a staging shard that is exactly an output shard is renamed, not copied.
void write_splits(const PrepareOptions& o, const StagingSink& sink, const Tokenizer& tok, const std::string& tmp,
                  int64_t chunk, PrepareReport& rep) {
  const int64_t N = sink.total(), ST = o.shard_tokens;
  const int64_t V = o.val_tokens > 0 ? o.val_tokens : std::max<int64_t>(1, std::llround(o.val_fraction * double(N)));
  if (V >= N)
    throw UsageError("the inputs hold " + std::to_string(N) + " tokens, too few for " + std::to_string(V) +
                     " validation tokens plus training data; give more text or a smaller " +
                     (o.val_tokens > 0 ? "--val-tokens" : "--val-fraction"));
  const int64_t T = N - V;
  for (Split s : {Split::train, Split::val}) {
    const int64_t a = s == Split::train ? 0 : T, b = s == Split::train ? T : N;
    const std::string sub = (fs::path(tmp) / split_name(s)).string();
    fs::create_directories(sub);
    const int64_t L = b - a, k = std::max<int64_t>(1, (L + ST / 2) / ST);
    for (int64_t f = 0; f < k; ++f) {
      const int64_t lo = a + f * ST, hi = f == k - 1 ? b : lo + ST;
      const std::string out = (fs::path(sub) / shard_name(f)).string();
      if (lo % ST == 0 && hi == std::min(lo + ST, N))
        fs::rename(sink.path(lo / ST), out);  // the staging shard is exactly this shard
      else
        copy_range(sink, ST, lo, hi, out, tok, chunk);
    }
    (s == Split::train ? rep.summary.train_shards : rep.summary.val_shards) = k;
  }
  rep.summary.train_tokens = T;
  rep.summary.val_tokens = V;
}

// Everything of prepare_dataset that writes, into the directory `tmp`.
PrepareReport prepare_into(const PrepareOptions& o, std::vector<InputFile> inputs, const std::string& tmp) {
  const auto t0 = Clock::now();
  PrepareReport rep;
  int64_t total_bytes = 0;  // of the inputs as given (standard input: unknown)
  for (const auto& f : inputs) total_bytes = f.size < 0 || total_bytes < 0 ? -1 : total_bytes + f.size;
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();

  std::unique_ptr<Tokenizer> tok;
  if (o.tokenizer == "byte") {
    tok = make_byte_tokenizer();
  } else if (!o.tokenizer_model.empty()) {
    tok = load_sentencepiece_model_file(o.tokenizer_model);
  } else {
    const auto tt = Clock::now();
    tok = train_tokenizer(o, inputs, tmp, threads);
    rep.tokenizer_train_seconds = seconds_since(tt);
  }
  rep.tokenizer = tok->describe();

  // Encode everything into staging shards of exactly shard_tokens.
  const int64_t chunk = std::min(kShardChunkTokens, o.shard_tokens);
  const std::string staging_dir = (fs::path(tmp) / "staging").string();
  fs::create_directories(staging_dir);
  StagingSink sink(staging_dir, *tok, o.shard_tokens, chunk);
  encode_inputs(o, inputs, total_bytes, *tok, threads, sink, rep);
  rep.summary.documents = int64_t(sink.doc_starts().size());
  if (sink.total() == 0) throw UsageError("the inputs hold no text (every file is empty); nothing to prepare");

  write_splits(o, sink, *tok, tmp, chunk, rep);
  fs::remove_all(staging_dir);
  fs::remove(fs::path(tmp) / "stdin.txt");
  rep.summary.created_by = o.created_by;
  write_dataset_meta(tmp, *tok, rep.summary);
  ShardDataset check(tmp);  // what we wrote opens and validates
  rep.output_bytes = directory_bytes(tmp);
  rep.input_files = int64_t(inputs.size());
  rep.seconds = seconds_since(t0);
  return rep;
}

}  // namespace

PrepareReport prepare_dataset(const PrepareOptions& o) {
  check_options(o);
  std::vector<InputFile> inputs = resolve_inputs(o.inputs);
  if (!o.tokenizer_model.empty()) load_sentencepiece_model_file(o.tokenizer_model);  // fail early
  StagedDirectory out(o.output, o.overwrite);  // removed again unless committed
  PrepareReport rep = prepare_into(o, std::move(inputs), out.path());
  out.commit();
  rep.output = out.output();
  return rep;
}

namespace {
std::string human_bytes(double b) {
  char buf[32];
  if (b < 1e3)
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  else if (b < 1e6)
    std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  else if (b < 1e9)
    std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  return buf;
}
}  // namespace

std::string format_prepare_report(const PrepareReport& r) {
  const auto& s = r.summary;
  const double mb = double(s.input_bytes) / 1e6, tokens = double(s.train_tokens + s.val_tokens);
  const double encode_s = std::max(1e-9, r.seconds - r.tokenizer_train_seconds);
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "rmoe_prepare: wrote %s\n"
                "  input      %lld file(s), %s, %lld document(s)\n"
                "  tokenizer  %s\n"
                "  train      %lld tokens in %lld shard(s)\n"
                "  val        %lld tokens in %lld shard(s)\n"
                "  output     %s\n"
                "  time       %.2f s (tokenizer training %.2f s); %.2f MB/s of text, %.0f tokens/s\n",
                r.output.c_str(), static_cast<long long>(r.input_files), human_bytes(double(s.input_bytes)).c_str(),
                static_cast<long long>(s.documents),
                r.tokenizer.c_str(), static_cast<long long>(s.train_tokens), static_cast<long long>(s.train_shards),
                static_cast<long long>(s.val_tokens), static_cast<long long>(s.val_shards),
                human_bytes(double(r.output_bytes)).c_str(),
                r.seconds, r.tokenizer_train_seconds, mb / encode_s, tokens / encode_s);
  return buf;
}

}  // namespace rmoe
