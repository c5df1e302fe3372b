// prepare.cpp — inputs -> tokenizer -> staging shards -> train/val shards
// (see prepare.h).
#include "rmoe/data/prepare.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <sstream>

#include "rmoe/core/error.h"
#include "rmoe/core/timer.h"

namespace rmoe {

namespace fs = std::filesystem;

namespace {

struct InputFile {
  std::string path;  // what is opened ("" for standard input)
  std::string name;  // what messages call it
  int64_t size = -1; // bytes, -1 if unknown (standard input)
};

// ---- inputs -------------------------------------------------------------------

std::vector<InputFile> resolve_inputs(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw UsageError("--input is required: text files, directories, or - for standard input");
  std::vector<InputFile> out;
  bool have_stdin = false;
  for (const std::string& p : inputs) {
    if (p == "-") {
      if (have_stdin) throw UsageError("--input=- is given twice (standard input can be read once)");
      have_stdin = true;
      out.push_back({"", "standard input", -1});
      continue;
    }
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    if (!fs::exists(st)) throw UsageError("--input=" + p + ": does not exist");
    if (fs::is_directory(st)) {
      std::vector<std::string> files;
      for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const std::string leaf = it->path().filename().string();
        if (!leaf.empty() && leaf[0] == '.') {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) files.push_back(it->path().string());
      }
      if (ec) throw UsageError("--input=" + p + ": cannot list the directory (" + ec.message() + ")");
      if (files.empty()) throw UsageError("--input=" + p + ": the directory holds no files");
      std::sort(files.begin(), files.end());
      for (auto& f : files) out.push_back({f, f, int64_t(fs::file_size(f, ec))});
    } else if (fs::is_regular_file(st)) {
      out.push_back({p, p, int64_t(fs::file_size(p, ec))});
    } else {
      throw UsageError("--input=" + p + ": is neither a regular file nor a directory");
    }
  }
  for (const InputFile& f : out) {  // fail before any work if a file cannot be opened
    if (f.path.empty()) continue;
    const int fd = ::open(f.path.c_str(), O_RDONLY);
    if (fd < 0) throw UsageError("input '" + f.name + "' cannot be read: " + std::strerror(errno));
    ::close(fd);
  }
  return out;
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' ||
                                                             c == '\f' || c == '\v'; });
}

// Length of the longest valid UTF-8 prefix of s.
size_t valid_utf8_prefix(std::string_view s) {
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned c = p[i];
    size_t n;
    unsigned min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4, min = 0x10000;
    } else {
      return i;
    }
    if (i + n > s.size()) return i;
    unsigned cp = c & (0xFF >> (n + 1));
    for (size_t k = 1; k < n; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n;
  }
  return i;
}

// Reads the inputs as a sequence of lines (each with its '\n'; a line longer
// than kMaxPiece comes in pieces cut at UTF-8 boundaries) and document ends.
// Without `lines`, pieces are blocks of up to kMaxPiece bytes (faster, for
// the byte tokenizer).
class InputReader {
 public:
  static constexpr size_t kBuffer = size_t(4) << 20, kMaxPiece = size_t(1) << 20;

  InputReader(const std::vector<InputFile>& files, bool lines, bool split_blank_lines, bool require_utf8,
              bool forbid_nul)
      : files_(files),
        lines_(lines || split_blank_lines),
        split_blank_(split_blank_lines),
        utf8_(require_utf8),
        no_nul_(forbid_nul),
        buf_(kBuffer) {}
  ~InputReader() { close_file(); }

  // false at the end; else either *doc_end is true or *line is set (valid
  // until the next call).
  bool next(std::string_view* line, bool* doc_end) {
    *doc_end = false;
    while (true) {
      if (fd_ < 0) {
        if (next_file_ == files_.size()) return false;
        open_file(next_file_++);
      }
      const std::string_view avail(buf_.data() + begin_, end_ - begin_);
      const size_t nl = lines_ ? avail.find('\n') : std::string_view::npos;
      std::string_view piece;
      if (nl != std::string_view::npos) {
        piece = avail.substr(0, nl + 1);
      } else if (avail.size() > kMaxPiece) {
        size_t cut = kMaxPiece;  // do not split a UTF-8 sequence
        while (cut > kMaxPiece - 4 && (static_cast<unsigned char>(avail[cut]) & 0xC0) == 0x80) --cut;
        piece = avail.substr(0, cut);
      } else if (!eof_) {
        read_more();
        continue;
      } else if (!avail.empty()) {
        piece = avail;
      } else {  // end of this file
        close_file();
        if (doc_has_text_) {
          doc_has_text_ = false;
          *doc_end = true;
          return true;
        }
        continue;
      }
      const int64_t piece_offset = offset_;
      begin_ += piece.size();
      offset_ += int64_t(piece.size());
      const bool complete_line = !piece.empty() && piece.back() == '\n';
      if (split_blank_ && complete_line && is_blank(piece)) {
        if (doc_has_text_) {
          doc_has_text_ = false;
          *doc_end = true;
          return true;
        }
        continue;
      }
      if (utf8_) {
        const size_t ok = valid_utf8_prefix(piece);
        if (ok != piece.size())
          throw UsageError("input '" + files_[current_].name + "' has invalid UTF-8 at byte offset " +
                           std::to_string(piece_offset + int64_t(ok)) +
                           "; --tokenizer sentencepiece needs UTF-8 text (use --tokenizer byte for other data)");
      }
      if (no_nul_) {
        const size_t nul = piece.find('\0');
        if (nul != std::string_view::npos)
          throw UsageError("input '" + files_[current_].name + "' has a NUL byte at byte offset " +
                           std::to_string(piece_offset + int64_t(nul)) +
                           "; the byte tokenizer reserves NUL as its end-of-document token (strip it: tr -d '\\000')");
      }
      doc_has_text_ = true;
      *line = piece;
      return true;
    }
  }

  int64_t bytes_read() const { return bytes_read_; }

 private:
  void open_file(size_t i) {
    current_ = i;
    fd_ = files_[i].path.empty() ? 0 : ::open(files_[i].path.c_str(), O_RDONLY);
    if (fd_ < 0) throw UsageError("input '" + files_[i].name + "' cannot be read: " + std::strerror(errno));
    begin_ = end_ = 0;
    offset_ = 0;
    eof_ = false;
    doc_has_text_ = false;
  }
  void close_file() {
    if (fd_ > 0) ::close(fd_);
    fd_ = -1;
  }
  void read_more() {
    if (begin_ > 0) {  // keep the unfinished line at the front
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    while (true) {
      const ssize_t got = ::read(fd_, buf_.data() + end_, buf_.size() - end_);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0)
        throw UsageError("input '" + files_[current_].name + "' cannot be read at byte " +
                         std::to_string(offset_ + int64_t(end_)) + ": " + std::strerror(errno));
      if (got == 0) eof_ = true;
      end_ += size_t(got);
      bytes_read_ += got;
      return;
    }
  }

  const std::vector<InputFile>& files_;
  bool lines_, split_blank_, utf8_, no_nul_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
  size_t next_file_ = 0, current_ = 0;
  int fd_ = -1;
  int64_t offset_ = 0;  // file offset of buf_[begin_]
  int64_t bytes_read_ = 0;
  bool eof_ = false, doc_has_text_ = false;
};

// ---- progress -------------------------------------------------------------------

class Progress {
 public:
  Progress(int mode, int64_t total) : total_(total) {
    tty_ = ::isatty(2);
    on_ = mode == 1 || (mode < 0 && (total < 0 || total >= (int64_t(16) << 20)) && (tty_ || total >= (int64_t(256) << 20)));
    t0_ = last_ = Clock::now();
  }
  bool on() const { return on_; }
  void update(int64_t done, bool force = false) {
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
  void finish(int64_t done) {
    if (!on_) return;
    update(done, true);
    if (tty_ && shown_) std::fprintf(stderr, "\n");
  }

 private:
  int64_t total_;
  bool tty_ = false, on_ = false, shown_ = false;
  Clock::time_point t0_, last_;
};

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
  std::string path(int64_t i) const {
    char name[32];
    std::snprintf(name, sizeof name, "%05lld.h5", static_cast<long long>(i));
    return (fs::path(dir_) / name).string();
  }
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

std::string shard_name(int64_t i) {
  char name[32];
  std::snprintf(name, sizeof name, "%05lld.h5", static_cast<long long>(i));
  return name;
}

// Refuses an output that must not be replaced; returns whether it exists.
bool check_output(const std::string& out, bool overwrite) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return false;
  if (!fs::is_directory(out, ec)) throw UsageError("--output=" + out + ": exists and is not a directory");
  if (is_dataset_dir(out)) {
    if (!overwrite)
      throw UsageError("--output=" + out + ": already holds a dataset (" + kDatasetMetaFile +
                       "); pass --overwrite to replace it, or choose another directory");
    return true;
  }
  if (!fs::is_empty(out, ec))
    throw UsageError("--output=" + out + ": exists, is not empty and holds no rmoe dataset; choose another directory"
                     " (--overwrite replaces only a dataset)");
  return true;
}

int64_t directory_bytes(const std::string& dir) {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) n += int64_t(e.file_size());
  return n;
}

// The body of prepare_dataset, writing into `tmp`.
PrepareReport prepare_into(const PrepareOptions& o, std::vector<InputFile> inputs, const std::string& tmp) {
  const auto t0 = Clock::now();
  PrepareReport rep;
  int64_t total_bytes = 0;
  for (const auto& f : inputs) total_bytes = f.size < 0 || total_bytes < 0 ? -1 : total_bytes + f.size;
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();

  // Tokenizer.
  std::unique_ptr<Tokenizer> tok;
  if (o.tokenizer == "byte") {
    tok = make_byte_tokenizer();
  } else if (!o.tokenizer_model.empty()) {
    tok = load_sentencepiece_model_file(o.tokenizer_model);
  } else {
    // Training reads the inputs twice: keep standard input in a file.
    for (InputFile& f : inputs) {
      if (!f.path.empty()) continue;
      const std::string spool = (fs::path(tmp) / "stdin.txt").string();
      const int fd = ::open(spool.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) throw Error("cannot create '" + spool + "': " + std::strerror(errno));
      std::vector<char> buf(size_t(1) << 20);
      int64_t n_total = 0;
      while (true) {
        const ssize_t got = ::read(0, buf.data(), buf.size());
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw UsageError(std::string("standard input cannot be read: ") + std::strerror(errno));
        if (got == 0) break;
        if (::write(fd, buf.data(), size_t(got)) != got) {
          ::close(fd);
          throw Error("writing '" + spool + "' failed (disk full?)");
        }
        n_total += got;
      }
      ::close(fd);
      f.path = spool;
      f.size = n_total;
    }
    const auto tt = Clock::now();
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
    tok = train_sentencepiece(next_sentence, so);
    rep.tokenizer_train_seconds = seconds_since(tt);
  }
  rep.tokenizer = tok->describe();

  // Encode everything into staging shards of exactly shard_tokens.
  const int64_t ST = o.shard_tokens;
  const int64_t chunk = std::min(kShardChunkTokens, ST);
  const std::string staging_dir = (fs::path(tmp) / "staging").string();
  fs::create_directories(staging_dir);
  StagingSink sink(staging_dir, *tok, ST, chunk);
  {
    const bool byte = tok->name() == "byte";
    InputReader reader(inputs, /*lines=*/!byte, o.split_blank_lines, /*require_utf8=*/!byte, /*forbid_nul=*/byte);
    BatchEncoder enc(*tok, sink, threads);
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
  const int64_t N = sink.total();
  rep.summary.documents = int64_t(sink.doc_starts().size());
  if (N == 0) throw UsageError("the inputs hold no text (every file is empty); nothing to prepare");

  // Split: the last V tokens are validation.
  int64_t V = o.val_tokens > 0 ? o.val_tokens : std::max<int64_t>(1, std::llround(o.val_fraction * double(N)));
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
        copy_range(sink, ST, lo, hi, out, *tok, chunk);
    }
    (s == Split::train ? rep.summary.train_shards : rep.summary.val_shards) = k;
  }
  fs::remove_all(staging_dir);
  fs::remove(fs::path(tmp) / "stdin.txt");
  rep.summary.train_tokens = T;
  rep.summary.val_tokens = V;
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
  // Options.
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
  std::vector<InputFile> inputs = resolve_inputs(o.inputs);
  if (!o.tokenizer_model.empty()) load_sentencepiece_model_file(o.tokenizer_model);  // fail early
  const std::string out = fs::path(o.output).lexically_normal().string();
  const std::string out_clean = !out.empty() && out.back() == '/' && out.size() > 1 ? out.substr(0, out.size() - 1) : out;
  const bool replace = check_output(out_clean, o.overwrite);

  // Work in a temporary sibling; move it into place only when complete.
  const std::string tmp = out_clean + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  const fs::path parent = fs::path(out_clean).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (!fs::create_directory(tmp, ec) && !fs::is_directory(tmp))
    throw UsageError("--output=" + o.output + ": cannot create '" + tmp + "' (" + ec.message() + ")");
  PrepareReport rep;
  try {
    rep = prepare_into(o, std::move(inputs), tmp);
    if (replace) {
      const std::string old = out_clean + ".old-" + std::to_string(::getpid());
      fs::rename(out_clean, old);
      fs::rename(tmp, out_clean);
      fs::remove_all(old);
    } else {
      fs::rename(tmp, out_clean);
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  rep.output = out_clean;
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
