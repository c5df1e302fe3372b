// test_data.cpp — tokenizers, shards, datasets, rmoe_prepare and the loader
// (data/*.h, docs/DATA.md).
//
// Round trips (text -> shards -> loader -> decode, byte and sentencepiece),
// the loader's order contract (disjoint rank slices covering each epoch, same
// seed same order, exact resume), its prefetch queue, and every kind of bad
// input: each must throw with a message naming the file and the problem.
// Corpora are generated here; temporary files go under RMOE_BINARY_DIR.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <csignal>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include "rmoe/data/batch_source.h"
#include "rmoe/data/dataset.h"
#include "rmoe/data/loader.h"
#include "rmoe/data/prepare.h"
#include "rmoe/data/shard.h"
#include "rmoe/data/staging.h"
#include "rmoe/data/text_input.h"
#include "rmoe/data/tokenizer.h"
#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"
#include "rmoe/core/rng.h"
#include "rmoe/train/config.h"
#include "test_util.h"

namespace rmoe {
namespace {

namespace fs = std::filesystem;
using namespace testutil;
using namespace std::string_literals;

// A fresh directory for the running test.
std::string test_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path d = fs::path(RMOE_BINARY_DIR) / "test_data_tmp" / (std::string(info->test_suite_name()) + "." + info->name());
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Text with words of a small syllable alphabet (some non-ASCII), punctuation,
// runs of spaces, tabs and newlines: enough variety to train a tokenizer.
std::string make_text(uint64_t seed, int words) {
  static const char* syllables[] = {"ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu",
                                    "ü",  "ñ",  "é",  "漢", "字", "th", "er", "an", "in", "on"};
  std::string s;
  for (int w = 0; w < words; ++w) {
    const uint64_t r = random_bits(seed, 1, uint64_t(w));
    const int n = 1 + int(r % 4);
    for (int k = 0; k < n; ++k) s += syllables[random_bits(seed, 2, uint64_t(w) * 8 + k) % 20];
    const uint64_t sep = (r >> 8) % 40;
    s += sep < 30 ? " " : sep < 33 ? ", " : sep < 35 ? ".\n" : sep < 36 ? "  " : sep < 37 ? "\t" : sep < 38 ? "\n\n" : "? ";
  }
  return s;
}

// All tokens of a split, shard after shard.
std::vector<int32_t> read_split(const ShardDataset& ds, Split s) {
  std::vector<int32_t> out;
  for (const ShardHeader& h : ds.split(s).shards) {
    ShardReader r(h.path);
    std::vector<int32_t> part(size_t(h.token_count));
    r.read(0, h.token_count, part.data());
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

// The documents of a token stream (each ends with eod), decoded.
std::vector<std::string> decode_documents(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<std::string> docs;
  size_t start = 0;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == tok.eod_id()) {
      docs.push_back(tok.decode(ids.data() + start, int64_t(i - start)));
      start = i + 1;
    }
  EXPECT_EQ(start, ids.size()) << "the stream does not end with an end-of-document token";
  return docs;
}

PrepareOptions byte_options(const std::vector<std::string>& inputs, const std::string& out) {
  PrepareOptions o;
  o.inputs = inputs;
  o.output = out;
  o.tokenizer = "byte";
  o.progress = 0;
  o.threads = 2;
  return o;
}

// A dataset written shard by shard (byte tokenizer), from given token lists.
void make_dataset(const std::string& dir, const std::vector<std::vector<int32_t>>& train,
                  const std::vector<std::vector<int32_t>>& val) {
  auto tok = make_byte_tokenizer();
  DatasetSummary sum;
  for (Split s : {Split::train, Split::val}) {
    const auto& shards = s == Split::train ? train : val;
    fs::create_directories(fs::path(dir) / split_name(s));
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "%05zu.h5", i);
      ShardWriter w((fs::path(dir) / split_name(s) / name).string(), *tok, 64);
      w.append(shards[i].data(), int64_t(shards[i].size()));
      w.finish({0});
      (s == Split::train ? sum.train_tokens : sum.val_tokens) += int64_t(shards[i].size());
    }
    (s == Split::train ? sum.train_shards : sum.val_shards) = int64_t(shards.size());
  }
  write_dataset_meta(dir, *tok, sum);
}

std::vector<int32_t> random_tokens(uint64_t seed, int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[size_t(i)] = int32_t(random_bits(seed, 7, uint64_t(i)) % 256);
  return t;
}

// The shards' tokens of a hand-made dataset, for expected window contents.
struct RawDataset {
  std::vector<std::vector<int32_t>> train, val;
};

RawDataset make_mixed_dataset(const std::string& dir) {
  RawDataset raw;
  const int64_t train_sizes[] = {700, 1234, 333, 2900};
  const int64_t val_sizes[] = {500, 250};
  for (int i = 0; i < 4; ++i) raw.train.push_back(random_tokens(100 + i, train_sizes[i]));
  for (int i = 0; i < 2; ++i) raw.val.push_back(random_tokens(200 + i, val_sizes[i]));
  make_dataset(dir, raw.train, raw.val);
  return raw;
}

// Expected S + 1 tokens of window w over shards (windows at stride S).
std::vector<int32_t> expected_window(const std::vector<std::vector<int32_t>>& shards, int S, int64_t w) {
  for (const auto& sh : shards) {
    const int64_t n = (int64_t(sh.size()) - 1) / S;
    if (w < n) return std::vector<int32_t>(sh.begin() + w * S, sh.begin() + w * S + S + 1);
    w -= n;
  }
  ADD_FAILURE() << "window out of range";
  return {};
}

struct Batch {
  std::vector<int32_t> tokens, targets;
  bool operator==(const Batch&) const = default;
};

Batch fill(const BatchSource& src, int64_t step, int64_t first, int64_t n, int S) {
  Batch b{std::vector<int32_t>(size_t(n * S)), std::vector<int32_t>(size_t(n * S))};
  src.fill(step, first, n, S, b.tokens.data(), b.targets.data());
  return b;
}

LoaderOptions loader_options(int S, int64_t G, uint64_t seed) {
  LoaderOptions o;
  o.seq_length = S;
  o.global_batch_size = G;
  o.seed = seed;
  return o;
}

struct CliResult {
  int status;
  std::string output;
};

// Runs rmoe_prepare with `args` (shell words), stdout and stderr together.
CliResult run_prepare(const std::string& args, const std::string& stdin_path = "/dev/null") {
  const std::string cmd =
      std::string(RMOE_BINARY_DIR) + "/rmoe_prepare " + args + " < '" + stdin_path + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t got;
  while (p && (got = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  const int st = p ? pclose(p) : -1;
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

bool have_prepare_binary() { return fs::exists(std::string(RMOE_BINARY_DIR) + "/rmoe_prepare"); }

// Runs body() in a child process that is killed after `seconds`, so that a
// hang fails the test instead of hanging ctest. body() returns "" for success
// or what went wrong; so does this, adding how the child ended if it did not
// exit normally.
std::string in_child_with_watchdog(unsigned seconds, const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe() failed";
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return "fork() failed";
  if (pid == 0) {
    ::close(fds[0]);
    alarm(seconds);
    std::string verdict;
    try {
      verdict = body();
    } catch (const std::exception& e) {
      verdict = std::string("unexpected exception: ") + e.what();
    }
    const ssize_t ignored = ::write(fds[1], verdict.data(), verdict.size());
    (void)ignored;
    _exit(0);  // no exit handlers: they belong to the parent (gtest, HDF5)
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t got;
  while ((got = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, size_t(got));
  ::close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (WIFSIGNALED(st))
    return out + (WTERMSIG(st) == SIGALRM ? " [hung: killed after " + std::to_string(seconds) + " s]"
                                          : " [killed by signal " + std::to_string(WTERMSIG(st)) + "]");
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return out + " [exit status " + std::to_string(WEXITSTATUS(st)) + "]";
  return out;
}

// This process's peak virtual memory (VmPeak, kB): HDF5's allocation for a
// damaged chunk size shows there even though it touches few pages (F2).
int64_t vm_peak_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmPeak:", 0) == 0) return std::stoll(line.substr(7));
  return -1;
}

// Opens a shard and reads all it holds; throws rmoe::Error to reject.
struct ShardContents {
  ShardHeader header;
  std::vector<int32_t> tokens;
  std::vector<int64_t> docs;
  bool operator==(const ShardContents& o) const {
    const ShardHeader &a = header, &b = o.header;
    return a.token_count == b.token_count && a.vocab_size == b.vocab_size && a.eod_id == b.eod_id &&
           a.tokenizer == b.tokenizer && a.tokenizer_fingerprint == b.tokenizer_fingerprint &&
           a.token_bytes == b.token_bytes && a.num_documents == b.num_documents && tokens == o.tokens &&
           docs == o.docs;
  }
};
ShardContents read_shard(const std::string& path) {
  ShardReader r(path);
  ShardContents c{r.header(), std::vector<int32_t>(size_t(r.header().token_count)), r.doc_offsets()};
  r.read(0, r.header().token_count, c.tokens.data());
  return c;
}

// ---- tokenizers and the permutation ----------------------------------------------

TEST(Tokenizer, ByteRoundTripsAnyBytes) {
  auto tok = make_byte_tokenizer();
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->eod_id(), 0);
  std::string bytes;
  for (int i = 1; i < 256; ++i) bytes += char(i);
  bytes += "héllo \xff\xfe invalid UTF-8";
  std::vector<int32_t> ids;
  tok->encode(bytes, ids);
  ASSERT_EQ(ids.size(), bytes.size());
  EXPECT_EQ(tok->decode(ids.data(), int64_t(ids.size())), bytes);
  ids.push_back(0);
  EXPECT_EQ(tok->decode(ids.data(), int64_t(ids.size()), "<eod>"), bytes + "<eod>");
  const int32_t bad = 256;
  expect_error([&] { tok->decode(&bad, 1); }, {"256", "outside the vocabulary"});
  expect_error([&] { tok->encode("a\0b"s, ids); }, {"NUL byte at offset 1", "end-of-document"});
  auto again = load_tokenizer("byte", "", "test");
  EXPECT_EQ(again->fingerprint(), tok->fingerprint());
  expect_error([&] { load_tokenizer("wordpiece", "", "somewhere.h5"); }, {"somewhere.h5", "unknown tokenizer 'wordpiece'"});
  expect_error([&] { load_tokenizer("sentencepiece", "not a model", "x/dataset.h5"); },
               {"x/dataset.h5", "not a valid SentencePiece model"});
}

TEST(Tokenizer, PermutationIsABijectionAndDependsOnTheKey) {
  for (uint64_t n : {1ull, 2ull, 3ull, 5ull, 17ull, 100ull, 1000ull, 4097ull}) {
    std::vector<char> seen(n, 0);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t p = permute_index(i, n, 42);
      ASSERT_LT(p, n);
      ASSERT_FALSE(seen[p]) << "n=" << n << " repeats " << p;
      seen[p] = 1;
    }
  }
  int same = 0, fixed = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same += permute_index(i, 1000, 1) == permute_index(i, 1000, 2);
    fixed += permute_index(i, 1000, 1) == i;
  }
  EXPECT_LT(same, 20);  // different keys: (nearly) unrelated orders
  EXPECT_LT(fixed, 20);
}

// ---- the pieces of rmoe_prepare: text input, staging --------------------------------

TEST(TextInput, Utf8PrefixStopsAtTheFirstInvalidByte) {
  EXPECT_EQ(valid_utf8_prefix(""), 0u);
  EXPECT_EQ(valid_utf8_prefix("plain ascii\n"), 12u);
  const std::string mixed = "a\xC3\xA9" "b\xE6\xBC\xA2\xF0\x9F\x98\x80";  // a é b 漢 U+1F600
  EXPECT_EQ(valid_utf8_prefix(mixed), mixed.size());
  EXPECT_EQ(valid_utf8_prefix("\xF4\x8F\xBF\xBF"), 4u);  // U+10FFFF, the last code point
  EXPECT_EQ(valid_utf8_prefix("ab\xC3"), 2u);              // cut by the end
  EXPECT_EQ(valid_utf8_prefix("ab\xE6\xBC"), 2u);
  EXPECT_EQ(valid_utf8_prefix("a\x80"), 1u);               // stray continuation byte
  EXPECT_EQ(valid_utf8_prefix("a\xC3z"), 1u);              // lead byte without its continuation
  EXPECT_EQ(valid_utf8_prefix("\xC0\xAF"), 0u);           // overlong '/'
  EXPECT_EQ(valid_utf8_prefix("\xE0\x80\xAF"), 0u);       // overlong '/'
  EXPECT_EQ(valid_utf8_prefix("\xF0\x82\x82\xAC"), 0u);   // overlong euro sign
  EXPECT_EQ(valid_utf8_prefix("x\xED\xA0\x80"), 1u);      // surrogate U+D800
  EXPECT_EQ(valid_utf8_prefix("\xF4\x90\x80\x80"), 0u);   // U+110000
  EXPECT_EQ(valid_utf8_prefix("\xF8\x88\x80\x80\x80"), 0u);  // 5-byte form
  EXPECT_EQ(valid_utf8_prefix("ok\xFF"), 2u);
  EXPECT_TRUE(is_blank_line(""));
  EXPECT_TRUE(is_blank_line(" \t\r\f\v\n"));
  EXPECT_FALSE(is_blank_line("  x \n"));
}

TEST(TextInput, FilesDocumentsAndTheOffsetOfBadText) {
  const std::string dir = test_dir();
  fs::create_directories(dir + "/in/sub");
  fs::create_directories(dir + "/in/.hidden");
  write_file(dir + "/in/b.txt", "second\n");
  write_file(dir + "/in/a.txt", "one\n  \n\ntwo\n");
  write_file(dir + "/in/sub/c.txt", "");
  write_file(dir + "/in/.dot.txt", "skipped");
  write_file(dir + "/in/.hidden/d.txt", "skipped");
  const std::vector<InputFile> files = resolve_inputs({dir + "/in"});
  ASSERT_EQ(files.size(), 3u);  // sorted, dot names skipped
  EXPECT_EQ(files[0].name, dir + "/in/a.txt");
  EXPECT_EQ(files[1].name, dir + "/in/b.txt");
  EXPECT_EQ(files[2].name, dir + "/in/sub/c.txt");
  EXPECT_EQ(files[0].size, 12);
  // Lines and document ends; a run of blank lines ends a document; an empty file is none.
  std::vector<std::string> seen;
  InputReader reader(files, /*lines=*/true, /*split_blank_lines=*/true, /*require_utf8=*/true, /*forbid_nul=*/false);
  std::string_view line;
  bool doc_end = false;
  while (reader.next(&line, &doc_end)) seen.push_back(doc_end ? "<eod>" : std::string(line));
  EXPECT_EQ(seen, (std::vector<std::string>{"one\n", "<eod>", "two\n", "<eod>", "second\n", "<eod>"}));
  EXPECT_EQ(reader.bytes_read(), 12 + 7);
  // Invalid UTF-8 and NUL name the file and the byte offset.
  write_file(dir + "/bad.txt", "fine\nfin\xC3(\n");
  const std::vector<InputFile> bad = resolve_inputs({dir + "/bad.txt"});
  expect_error(
      [&] {
        InputReader r(bad, true, false, /*require_utf8=*/true, false);
        while (r.next(&line, &doc_end)) {
        }
      },
      {"input '" + dir + "/bad.txt'", "invalid UTF-8 at byte offset 8"});
  write_file(dir + "/nul.txt", "ab"s + '\0' + "c");
  const std::vector<InputFile> nul = resolve_inputs({dir + "/nul.txt"});
  expect_error(
      [&] {
        InputReader r(nul, false, false, false, /*forbid_nul=*/true);
        while (r.next(&line, &doc_end)) {
        }
      },
      {"input '" + dir + "/nul.txt'", "NUL byte at byte offset 2"});
  expect_error([&] { resolve_inputs({"-", "-"}); }, {"--input=- is given twice"});
  expect_error([&] { resolve_inputs({dir + "/in/sub/none"}); }, {"does not exist"});
}

TEST(Staging, ReplacesTheOutputOnlyOnCommit) {
  const std::string dir = test_dir();
  const std::string out = dir + "/out";
  const std::string tmp = out + ".tmp-" + std::to_string(getpid());
  // New output: nothing at `out` until commit.
  {
    StagedDirectory s(out + "/", false);  // a trailing slash is the same directory
    EXPECT_EQ(s.output(), out);
    EXPECT_EQ(s.path(), tmp);
    EXPECT_TRUE(fs::is_directory(tmp));
    write_file(tmp + "/x", "new");
    EXPECT_FALSE(fs::exists(out));
    s.commit();
  }
  EXPECT_EQ(read_file(out + "/x"), "new");
  EXPECT_FALSE(fs::exists(tmp));
  // A dataset is replaced only with overwrite, and only when committed.
  const std::string data = dir + "/data";
  make_mixed_dataset(data);
  const std::string before = read_file(data + "/dataset.h5");
  expect_error([&] { StagedDirectory s(data, false); }, {"--output=" + data, "already holds a dataset", "--overwrite"});
  EXPECT_FALSE(fs::exists(data + ".tmp-" + std::to_string(getpid())));
  {
    StagedDirectory s(data, true);
    write_file(s.path() + "/partial", "half-written");
  }  // an error before commit: the temporary directory goes, the dataset stays
  EXPECT_FALSE(fs::exists(data + ".tmp-" + std::to_string(getpid())));
  EXPECT_EQ(read_file(data + "/dataset.h5"), before);
  EXPECT_FALSE(fs::exists(data + "/partial"));
  {
    StagedDirectory s(data, true);
    write_file(s.path() + "/replacement", "complete");
    s.commit();
  }
  EXPECT_EQ(read_file(data + "/replacement"), "complete");
  EXPECT_FALSE(fs::exists(data + "/dataset.h5"));
  for (const auto& e : fs::directory_iterator(dir))  // no .tmp-* or .old-* left behind
    EXPECT_EQ(e.path().filename().string().find('-'), std::string::npos) << e.path();
  // Never replaced: a file, a non-empty directory that is no dataset (even with overwrite).
  write_file(dir + "/file", "f");
  expect_error([&] { StagedDirectory s(dir + "/file", true); }, {"exists and is not a directory"});
  expect_error([&] { StagedDirectory s(out, true); }, {"--output=" + out, "holds no rmoe dataset"});
  EXPECT_EQ(read_file(out + "/x"), "new");
  // An empty directory may be filled.
  fs::create_directories(dir + "/empty");
  StagedDirectory e(dir + "/empty", false);
  e.commit();
  EXPECT_TRUE(fs::is_directory(dir + "/empty"));
  EXPECT_GT(directory_bytes(data), 0);
}

// ---- round trips ------------------------------------------------------------------

// Several documents, small shards (so shards are renamed and copied), then
// the whole stream decodes back to the documents; the loader's windows equal
// the stream at their positions, and one epoch reads each window once.
TEST(RoundTrip, ByteTextToShardsToLoaderToText) {
  const std::string dir = test_dir();
  fs::create_directories(dir + "/in/sub");
  std::vector<std::string> docs;
  std::vector<std::string> names = {"in/a.txt", "in/b.txt", "in/sub/c.txt", "in/sub/d.txt"};
  for (size_t i = 0; i < names.size(); ++i) {
    docs.push_back(make_text(i + 1, 600 + 300 * int(i)));
    write_file(dir + "/" + names[i], docs.back());
  }
  docs[3] += "\x01\xff binary\x02 bytes";
  write_file(dir + "/" + names[3], docs[3]);
  write_file(dir + "/in/.hidden", "skipped");
  PrepareOptions o = byte_options({dir + "/in"}, dir + "/ds");
  o.shard_tokens = 3000;
  o.val_fraction = 0.2;
  const PrepareReport rep = prepare_dataset(o);
  EXPECT_EQ(rep.summary.documents, 4);
  EXPECT_EQ(rep.input_files, 4);
  int64_t bytes = 0;
  for (auto& d : docs) bytes += int64_t(d.size());
  EXPECT_EQ(rep.summary.input_bytes, bytes);
  EXPECT_EQ(rep.summary.train_tokens + rep.summary.val_tokens, bytes + 4);  // + one eod per document
  EXPECT_NE(format_prepare_report(rep).find("MB/s"), std::string::npos);

  ShardDataset ds(dir + "/ds");
  EXPECT_EQ(ds.vocab_size(), 256);
  EXPECT_GE(ds.split(Split::train).shards.size(), 2u);
  for (const auto& h : ds.split(Split::train).shards) EXPECT_EQ(h.token_bytes, 2);
  std::vector<int32_t> stream = read_split(ds, Split::train), val = read_split(ds, Split::val);
  EXPECT_EQ(int64_t(val.size()), rep.summary.val_tokens);
  stream.insert(stream.end(), val.begin(), val.end());
  EXPECT_EQ(decode_documents(ds.tokenizer(), stream), docs);
  ds.verify_all();

  // Document offsets: every shard's /doc_offsets marks the tokens after an eod.
  int64_t base = 0;
  for (Split s : {Split::train, Split::val})
    for (const auto& h : ds.split(s).shards) {
      std::vector<int64_t> want;
      for (int64_t i = 0; i < h.token_count; ++i)
        if (base + i == 0 || stream[size_t(base + i - 1)] == 0) want.push_back(i);
      EXPECT_EQ(ShardReader(h.path).doc_offsets(), want) << h.path;
      base += h.token_count;
    }

  // Through the loader: one epoch of steps, rows placed by window id.
  const int S = 64;
  const int64_t G = 6;
  ShardBatchSource src(dir + "/ds", loader_options(S, G, 9));
  const int64_t W = src.num_windows(Split::train);
  std::vector<std::vector<int32_t>> by_window(static_cast<size_t>(W));
  for (int64_t step = 0; step * G < W; ++step) {
    const Batch b = fill(src, step, 0, G, S);
    for (int64_t j = 0; j < G && step * G + j < W; ++j) {
      const int64_t w = src.train_window(step, j);
      ASSERT_TRUE(by_window[size_t(w)].empty()) << "window " << w << " read twice in one epoch";
      by_window[size_t(w)].assign(b.tokens.begin() + j * S, b.tokens.begin() + (j + 1) * S);
      by_window[size_t(w)].push_back(b.targets[size_t((j + 1) * S - 1)]);
      EXPECT_TRUE(std::equal(b.tokens.begin() + j * S + 1, b.tokens.begin() + (j + 1) * S, b.targets.begin() + j * S));
    }
  }
  int64_t w = 0, shard_base = 0;
  for (const auto& h : ds.split(Split::train).shards) {
    std::string from_loader;  // the shard's text as the loader's windows tell it
    for (int64_t k = 0; k < (h.token_count - 1) / S; ++k, ++w) {
      ASSERT_FALSE(by_window[size_t(w)].empty()) << "window " << w << " never read";
      const auto& win = by_window[size_t(w)];
      // Windows overlap by one token: the first gives S + 1, the others S new tokens.
      from_loader += k == 0 ? ds.tokenizer().decode(win.data(), S + 1, "\x1e")
                            : ds.tokenizer().decode(win.data() + 1, S, "\x1e");
    }
    const int64_t covered = (h.token_count - 1) / S * S + 1;
    EXPECT_EQ(from_loader, ds.tokenizer().decode(stream.data() + shard_base, covered, "\x1e")) << h.path;
    shard_base += h.token_count;
  }
}

TEST(RoundTrip, SentencePieceBpeAndUnigramAndLoadedModel) {
  const std::string dir = test_dir();
  std::vector<std::string> docs;
  size_t text_bytes = 0;
  for (int i = 0; i < 3; ++i) {
    docs.push_back(make_text(50 + i, 6000));
    text_bytes += docs.back().size();
    write_file(dir + "/doc" + std::to_string(i) + ".txt", docs.back());
  }
  for (const char* type : {"bpe", "unigram"}) {
    PrepareOptions o = byte_options({dir + "/doc0.txt", dir + "/doc1.txt", dir + "/doc2.txt"},
                                    dir + "/ds_" + type);
    o.tokenizer = "sentencepiece";
    o.model_type = type;
    o.vocab_size = 400;
    o.shard_tokens = 4000;
    o.val_tokens = 1500;
    const PrepareReport rep = prepare_dataset(o);
    EXPECT_EQ(rep.summary.val_tokens, 1500);
    ShardDataset ds(o.output);
    EXPECT_EQ(ds.tokenizer().name(), "sentencepiece");
    EXPECT_EQ(ds.vocab_size(), 400);
    std::vector<int32_t> stream = read_split(ds, Split::train), val = read_split(ds, Split::val);
    stream.insert(stream.end(), val.begin(), val.end());
    EXPECT_LT(double(stream.size()), 0.6 * double(text_bytes)) << "sentencepiece should compress";
    EXPECT_EQ(decode_documents(ds.tokenizer(), stream), docs) << type;
    // The loader reads the same ids.
    ShardBatchSource src(o.output, loader_options(32, 4, 1));
    EXPECT_FALSE(src.byte_level());
    std::vector<int32_t> win(33);
    src.read_window(Split::train, 0, win.data());
    EXPECT_TRUE(std::equal(win.begin(), win.end(), stream.begin()));
  }
  // A model file loaded with --tokenizer-model encodes exactly as the trained one.
  ShardDataset bpe(dir + "/ds_bpe");
  write_file(dir + "/bpe.model", bpe.tokenizer().serialize());
  PrepareOptions o = byte_options({dir + "/doc0.txt", dir + "/doc1.txt", dir + "/doc2.txt"}, dir + "/ds_loaded");
  o.tokenizer = "sentencepiece";
  o.tokenizer_model = dir + "/bpe.model";
  o.shard_tokens = 4000;
  o.val_tokens = 1500;
  prepare_dataset(o);
  ShardDataset loaded(o.output);
  EXPECT_EQ(loaded.tokenizer().fingerprint(), bpe.tokenizer().fingerprint());
  EXPECT_EQ(read_split(loaded, Split::train), read_split(bpe, Split::train));
  expect_error([&] { load_sentencepiece_model_file(dir + "/missing.model"); },
               {"--tokenizer-model=" + dir + "/missing.model", "cannot open"});
}

TEST(RoundTrip, CommandLineWithStandardInputAndBlankLineDocuments) {
  if (!have_prepare_binary()) GTEST_SKIP() << "rmoe_prepare is not built";
  const std::string dir = test_dir();
  const std::string text = "first doc line\nsecond line\n\n\n  \nsecond doc\n\nthird doc, no newline";
  write_file(dir + "/stdin.txt", text);
  const CliResult r = run_prepare("--input - --output " + dir + "/ds --split-blank-lines --val-tokens 3 --quiet",
                                  dir + "/stdin.txt");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* part : {"3 document(s)", "tokens in", "MB/s", "tokens/s"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  ShardDataset ds(dir + "/ds");
  std::vector<int32_t> stream = read_split(ds, Split::train), val = read_split(ds, Split::val);
  stream.insert(stream.end(), val.begin(), val.end());
  EXPECT_EQ(decode_documents(ds.tokenizer(), stream),
            (std::vector<std::string>{"first doc line\nsecond line\n", "second doc\n", "third doc, no newline"}));
  EXPECT_NE(ds.summary().created_by.find("--split-blank-lines"), std::string::npos);
  // h5ls shows the layout (when the HDF5 tools are installed).
  if (std::system("command -v h5ls > /dev/null 2>&1") == 0) {
    FILE* p = popen(("h5ls -r " + ds.split(Split::train).shards[0].path).c_str(), "r");
    char buf[512];
    std::string out;
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
    EXPECT_NE(out.find("/tokens"), std::string::npos) << out;
    EXPECT_NE(out.find("/doc_offsets"), std::string::npos) << out;
  }
}

// ---- loader order -----------------------------------------------------------------

TEST(Loader, RankSlicesAreDisjointAndCoverTheEpoch) {
  const std::string dir = test_dir();
  const RawDataset raw = make_mixed_dataset(dir);
  const int S = 32;
  const int64_t G = 8;
  const int64_t W = (699 / 32) + (1233 / 32) + (332 / 32) + (2899 / 32);
  std::vector<Batch> global;  // P = 1, one batch per step
  for (int P : {1, 2, 4}) {
    std::vector<std::unique_ptr<ShardBatchSource>> ranks;
    for (int r = 0; r < P; ++r) ranks.push_back(std::make_unique<ShardBatchSource>(dir, loader_options(S, G, 5)));
    ASSERT_EQ(ranks[0]->num_windows(Split::train), W);
    std::set<int64_t> windows;
    const int64_t steps = (W + G - 1) / G;
    for (int64_t step = 0; step < steps; ++step) {
      Batch joined;
      for (int r = 0; r < P; ++r) {
        const int64_t slice = G / P, mb = std::max<int64_t>(1, slice / 2);
        for (int64_t f = r * slice; f < (r + 1) * slice; f += mb) {  // micro-batches of the rank's slice
          const Batch b = fill(*ranks[size_t(r)], step, f, mb, S);
          joined.tokens.insert(joined.tokens.end(), b.tokens.begin(), b.tokens.end());
          joined.targets.insert(joined.targets.end(), b.targets.begin(), b.targets.end());
          for (int64_t j = 0; j < mb; ++j) {
            const int64_t g = step * G + f + j, w = ranks[size_t(r)]->train_window(step, f + j);
            if (g < W) {
              EXPECT_TRUE(windows.insert(w).second) << "P=" << P << ": window " << w << " twice";
            }
            const std::vector<int32_t> want = expected_window(raw.train, S, w);
            ASSERT_TRUE(std::equal(want.begin(), want.begin() + S, b.tokens.begin() + j * S)) << "P=" << P;
            ASSERT_TRUE(std::equal(want.begin() + 1, want.end(), b.targets.begin() + j * S)) << "P=" << P;
          }
        }
      }
      if (P == 1)
        global.push_back(joined);
      else
        EXPECT_EQ(joined, global[size_t(step)]) << "P=" << P << " step " << step;
    }
    EXPECT_EQ(int64_t(windows.size()), W) << "P=" << P << ": the epoch is not covered";
  }
}

TEST(Loader, SameSeedSameOrderAndEpochsDiffer) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const int S = 32;
  ShardBatchSource a(dir, loader_options(S, 4, 11)), b(dir, loader_options(S, 4, 11)), c(dir, loader_options(S, 4, 12));
  bool differs = false;
  for (int64_t step = 0; step < 10; ++step) {
    const Batch x = fill(a, step, 0, 4, S);
    EXPECT_EQ(x, fill(b, step, 0, 4, S));
    differs |= !(x == fill(c, step, 0, 4, S));
  }
  EXPECT_TRUE(differs) << "another seed should give another order";
  const int64_t W = a.num_windows(Split::train);
  int same = 0;
  for (int64_t g = 0; g < W; ++g) same += a.train_window(0, g) == a.train_window(0, W + g);
  EXPECT_LT(same, W / 4) << "epoch 2 should be ordered differently from epoch 1";
}

TEST(Loader, ResumeAtStepNContinuesTheExactSequence) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const int S = 32;
  const int64_t G = 6, mb = 3;
  std::vector<Batch> full;
  {
    ShardBatchSource src(dir, loader_options(S, G, 3));
    for (int64_t step = 0; step < 60; ++step)  // > 2 epochs (159 windows)
      for (int64_t f = 0; f < G; f += mb) full.push_back(fill(src, step, f, mb, S));
  }
  for (int64_t resume : {1, 17, 41}) {
    ShardBatchSource src(dir, loader_options(S, G, 3));
    for (int64_t step = resume; step < 60; ++step)
      for (int64_t f = 0; f < G; f += mb)
        ASSERT_EQ(fill(src, step, f, mb, S), full[size_t(step * 2 + f / mb)]) << "resume " << resume << " step " << step;
  }
  ShardBatchSource no_threads(dir, [&] {
    LoaderOptions o = loader_options(S, G, 3);
    o.prefetch_steps = 0;
    return o;
  }());
  EXPECT_EQ(fill(no_threads, 7, 3, 3, S), full[7 * 2 + 1]);
}

// Requests that defeat the prediction (jumps, repeats, odd slices) still get
// exactly the data of a loader without threads.
TEST(Loader, AnyRequestOrderGivesTheSameData) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const int S = 32;
  const int64_t G = 8;
  ShardBatchSource prefetching(dir, loader_options(S, G, 21));
  LoaderOptions plain_opts = loader_options(S, G, 21);
  plain_opts.prefetch_steps = 0;
  ShardBatchSource plain(dir, plain_opts);
  int64_t step = 0;
  for (uint64_t i = 0; i < 400; ++i) {
    const uint64_t r = random_bits(5, 9, i);
    if (r % 10 == 0) step = int64_t(r >> 8) % 30;  // jump
    else if (r % 10 < 7) step += (r >> 4) % 2;      // mostly forward
    const int64_t n = 1 + int64_t(r >> 12) % 4, first = int64_t(r >> 20) % (G - n + 1);
    ASSERT_EQ(fill(prefetching, step, first, n, S), fill(plain, step, first, n, S)) << "request " << i;
  }
}

TEST(Loader, QueueRunsAheadOfASlowConsumer) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const int S = 32;
  const int64_t G = 8, mb = 2;
  LoaderOptions o = loader_options(S, G, 4);
  o.prefetch_steps = 2;
  ShardBatchSource src(dir, o);
  auto step = [&](int64_t s) {
    for (int64_t f = 0; f < G; f += mb) fill(src, s, f, mb, S);
  };
  step(0);
  step(1);  // the pattern (4 micro-batches per step) is known from here on
  for (int64_t s = 2; s < 6; ++s) {
    // "Training": wait (for the background threads, not a fixed time) until
    // the next step's 4 batches are waiting or nothing more is being read.
    const auto st = src.wait_until_ready(4, 60.0);
    EXPECT_GE(st.ready_now, 4) << "step " << s << ": the next step's batches should be waiting";
    EXPECT_LE(st.ready_now + st.reading_now, o.prefetch_steps * (G / mb)) << "the queue is bounded";
    step(s);
  }
  const auto st = src.stats();
  EXPECT_GE(st.ready_hits, 16) << "steps 2..5 should find their batches ready";
  EXPECT_GT(st.batches_read, 0);
  EXPECT_GE(st.wait_seconds, 0);
  EXPECT_NE(src.describe().find("prefetch 2 steps"), std::string::npos);
}

TEST(Loader, ValidationIsReadInAFixedOrder) {
  const std::string dir = test_dir();
  const RawDataset raw = make_mixed_dataset(dir);
  const int S = 32;
  const int64_t G = 4;
  ShardBatchSource src(dir, loader_options(S, G, 8));
  const int64_t Wv = src.num_windows(Split::val);
  ASSERT_EQ(Wv, 499 / 32 + 249 / 32);
  for (int64_t i = 0; i < 6; ++i) {
    Batch b{std::vector<int32_t>(size_t(2 * S)), std::vector<int32_t>(size_t(2 * S))};
    src.fill_validation(i, 2, 2, S, b.tokens.data(), b.targets.data());
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t w = (i * G + 2 + j) % Wv;
      EXPECT_EQ(src.val_window(i, 2 + j), w);
      const auto want = expected_window(raw.val, S, w);
      EXPECT_TRUE(std::equal(want.begin(), want.begin() + S, b.tokens.begin() + j * S));
    }
  }
}

// Shared readers read from several threads while another thread writes HDF5
// files: every read returns the stored tokens (core/h5 serialises the library,
// shard.h), whether or not libhdf5 is thread-safe.
TEST(Loader, ConcurrentShardReadsWhileWriting) {
  const std::string dir = test_dir();
  const RawDataset raw = make_mixed_dataset(dir);
  const ShardDataset ds(dir);
  std::vector<std::unique_ptr<ShardReader>> readers;
  for (const ShardHeader& h : ds.split(Split::train).shards) readers.push_back(std::make_unique<ShardReader>(h.path));
  std::atomic<int64_t> wrong{0}, reads{0};
  std::atomic<bool> failed{false};
  auto reader_thread = [&](uint64_t seed) {
    try {
      std::vector<int32_t> buf(64);
      for (int i = 0; i < 400; ++i) {
        const size_t s = random_bits(seed, 1, uint64_t(i)) % readers.size();
        const auto& want = raw.train[s];
        const int64_t n = 1 + int64_t(random_bits(seed, 2, uint64_t(i)) % 64);
        const int64_t at = int64_t(random_bits(seed, 3, uint64_t(i)) % uint64_t(int64_t(want.size()) - n + 1));
        readers[s]->read(at, n, buf.data());
        wrong += !std::equal(buf.begin(), buf.begin() + n, want.begin() + at);
        ++reads;
      }
    } catch (const std::exception& e) {
      failed = true;
      ADD_FAILURE() << e.what();
    }
  };
  auto writer_thread = [&] {
    try {
      auto tok = make_byte_tokenizer();
      for (int i = 0; i < 20; ++i) {
        ShardWriter w(dir + "/extra_" + std::to_string(i) + ".h5", *tok, 64);
        w.append(raw.val[0].data(), int64_t(raw.val[0].size()));
        w.finish({0});
        std::vector<int32_t> back(raw.val[0].size());
        ShardReader(dir + "/extra_" + std::to_string(i) + ".h5").read(0, int64_t(back.size()), back.data());
        wrong += back != raw.val[0];
      }
    } catch (const std::exception& e) {
      failed = true;
      ADD_FAILURE() << e.what();
    }
  };
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) threads.emplace_back(reader_thread, 50 + t);
  threads.emplace_back(writer_thread);
  for (auto& t : threads) t.join();
  EXPECT_FALSE(failed);
  EXPECT_EQ(reads, 4 * 400);
  EXPECT_EQ(wrong, 0);
}

TEST(Loader, OpenBatchSourceAndVocabularyFromTheData) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  auto src = open_batch_source(dir, 0, 1, 32, 4);
  EXPECT_EQ(src->vocab_size(), 256);
  EXPECT_TRUE(src->byte_level());
  EXPECT_NO_THROW(open_batch_source(dir, 256, 1, 32, 4));
  expect_error([&] { open_batch_source(dir, 257, 1, 32, 4); }, {"--vocab-size=257", "256", dir});
  // The training configuration takes the dataset's vocabulary unless given.
  const std::string data_flag = "--data-path=" + dir;
  TrainConfig cfg = parse_args({data_flag});
  EXPECT_FALSE(cfg.vocab_size_given);
  resolve_vocab_size_from_data(cfg);
  EXPECT_EQ(cfg.model.vocab_size, 256);
  TrainConfig given = parse_args({data_flag, "--vocab-size=300"});
  EXPECT_TRUE(given.vocab_size_given);
  expect_error([&] { resolve_vocab_size_from_data(given); }, {"--vocab-size=300", "256", dir});
  TrainConfig synthetic = parse_args({});
  resolve_vocab_size_from_data(synthetic);  // synthetic:markov: unchanged
  EXPECT_EQ(synthetic.model.vocab_size, TrainConfig{}.model.vocab_size);
}

// ---- bad input ------------------------------------------------------------------

TEST(BadInput, MissingPathsAndNotADataset) {
  const std::string dir = test_dir();
  expect_error([&] { ShardBatchSource(dir + "/nope", loader_options(8, 2, 1)); },
               {dir + "/nope", "does not exist"});
  expect_error([&] { ShardDataset ds(dir); }, {dir, "not an rmoe dataset", "dataset.h5"});
  expect_error([&] { dataset_vocab_size(dir + "/nope"); }, {dir + "/nope", "does not exist"});
  expect_error([&] { prepare_dataset(byte_options({dir + "/missing.txt"}, dir + "/out")); },
               {"--input=" + dir + "/missing.txt", "does not exist"});
  fs::create_directories(dir + "/empty_in");
  expect_error([&] { prepare_dataset(byte_options({dir + "/empty_in"}, dir + "/out")); },
               {dir + "/empty_in", "holds no files"});
  EXPECT_FALSE(fs::exists(dir + "/out"));
  // A shard listed by dataset.h5 but gone.
  make_mixed_dataset(dir + "/ds");
  fs::remove(dir + "/ds/train/00002.h5");
  expect_error([&] { ShardDataset ds(dir + "/ds"); }, {dir + "/ds/train", "holds 3 shards", "lists 4"});
}

TEST(BadInput, FileThatIsNotHdf5) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  write_file(dir + "/train/00001.h5", "this is plain text, not HDF5\n");
  expect_error([&] { ShardDataset ds(dir); }, {"shard '" + dir + "/train/00001.h5'", "is not an HDF5 file"});
  write_file(dir + "/dataset.h5", "garbage");
  expect_error([&] { ShardDataset ds(dir); }, {dir + "/dataset.h5", "is not an HDF5 file"});
}

TEST(BadInput, TruncatedShard) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const std::string shard = dir + "/train/00003.h5";
  fs::resize_file(shard, fs::file_size(shard) * 6 / 10);
  expect_error([&] { ShardDataset ds(dir); }, {"shard '" + shard + "'", "truncated or corrupt"});
}

// Flips one byte inside the first data chunk of /tokens.
void flip_token_byte(const std::string& path) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  hid_t d = H5Dopen2(f, "/tokens", H5P_DEFAULT);
  hsize_t offset[1];
  unsigned mask = 0;
  haddr_t addr = 0;
  hsize_t size = 0;
  hid_t space = H5Dget_space(d);  // HDF5 1.10 wants a real dataspace here, not H5S_ALL
  ASSERT_GE(H5Dget_chunk_info(d, space, 0, offset, &mask, &addr, &size), 0);
  H5Sclose(space);
  H5Dclose(d);
  H5Fclose(f);
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(std::streamoff(addr + size / 3));
  char c = 0;
  io.read(&c, 1);
  c ^= 0x10;
  io.seekp(std::streamoff(addr + size / 3));
  io.write(&c, 1);
}

TEST(BadInput, BitFlippedShardIsCaughtByTheChecksum) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const std::string shard = dir + "/train/00001.h5";
  flip_token_byte(shard);
  ShardDataset ds(dir);  // metadata is intact
  expect_error([&] { ds.verify_all(); }, {"shard '" + shard + "'", "corrupt", "checksum"});
  // Through the prefetching loader: the fill() that needs the chunk fails.
  ShardBatchSource src(dir, loader_options(32, 8, 1));
  expect_error(
      [&] {
        for (int64_t step = 0; step < 40; ++step)
          for (int64_t f = 0; f < 8; f += 2) fill(src, step, f, 2, 32);
      },
      {"shard '" + shard + "'", "checksum"});
}

// A shard written by hand, with chosen attributes.
void write_raw_shard(const std::string& path, const std::vector<uint16_t>& tokens, const std::string& format,
                     int64_t version, int64_t vocab, bool checksum = true) {
  auto tok = make_byte_tokenizer();
  h5::File f(path, h5::File::truncate_checksummed);
  h5::use_checksummed_chunk_indexes(f);  // as ShardWriter
  f.create_growable_1d<uint16_t>("/tokens", 64, checksum);
  f.append_1d<uint16_t>("/tokens", tokens.data(), int64_t(tokens.size()));
  h5::set_attr_fixed_string(f, "format", format);
  f.set_attr("version", version);
  f.set_attr("vocab_size", vocab);
  f.set_attr("eod_id", int64_t(0));
  h5::set_attr_fixed_string(f, "tokenizer", "byte");
  h5::set_attr_fixed_string(f, "tokenizer_fingerprint", tok->fingerprint());
  f.set_attr("token_count", int64_t(tokens.size()));
}

TEST(BadInput, WrongFormatVersionAndLayout) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const std::string shard = dir + "/val/00001.h5";
  const std::vector<uint16_t> tokens(250, 65);
  write_raw_shard(shard, tokens, "other-format", 1, 256);
  expect_error([&] { ShardDataset ds(dir); }, {"shard '" + shard + "'", "format 'other-format'", "rmoe-tokens"});
  write_raw_shard(shard, tokens, "rmoe-tokens", 2, 256);
  expect_error([&] { ShardDataset ds(dir); }, {"shard '" + shard + "'", "version 2", "reads version 1"});
  write_raw_shard(shard, tokens, "rmoe-tokens", 1, 256, /*checksum=*/false);
  expect_error([&] { ShardDataset ds(dir); }, {"shard '" + shard + "'", "Fletcher32"});
  {  // the HDF5 1.8 chunk index, as the old ShardWriter wrote (finding F2)
    auto tok = make_byte_tokenizer();
    h5::File f(shard, h5::File::truncate_checksummed);
    f.create_growable_1d<uint16_t>("/tokens", 64, true);
    f.append_1d<uint16_t>("/tokens", tokens.data(), int64_t(tokens.size()));
    h5::set_attr_fixed_string(f, "format", "rmoe-tokens");
    f.set_attr("version", int64_t(1));
    f.set_attr("vocab_size", int64_t(256));
    f.set_attr("eod_id", int64_t(0));
    h5::set_attr_fixed_string(f, "tokenizer", "byte");
    h5::set_attr_fixed_string(f, "tokenizer_fingerprint", tok->fingerprint());
    f.set_attr("token_count", int64_t(tokens.size()));
    EXPECT_FALSE(f.info("/tokens").checksummed_chunk_index);
  }
  expect_error([&] { ShardDataset ds(dir); },
               {"shard '" + shard + "'", "/tokens is stored without checksummed chunks and chunk index",
                "re-run rmoe_prepare"});
  write_raw_shard(shard, tokens, "rmoe-tokens", 1, 256);
  EXPECT_NO_THROW(ShardDataset{dir});
  {
    const h5::File written(dir + "/val/00000.h5", h5::File::readonly);  // by ShardWriter
    EXPECT_TRUE(written.info("/tokens").checksummed_chunk_index);
    EXPECT_TRUE(written.info("/tokens").fletcher32);
    EXPECT_TRUE(written.info("/doc_offsets").checksummed_chunk_index);
    EXPECT_TRUE(written.info("/doc_offsets").fletcher32);
  }
  // The dataset file itself.
  {
    h5::File meta(dir + "/dataset.h5", h5::File::truncate_checksummed);
    h5::set_attr_fixed_string(meta, "format", "rmoe-dataset");
    meta.set_attr("version", int64_t(7));
  }
  expect_error([&] { ShardDataset ds(dir); }, {dir + "/dataset.h5", "version 7"});
}

// Files of older rmoe_prepare builds stored their string attributes as
// variable-length strings (HDF5's global heap, no checksum: finding F1): they
// are refused, naming the file and the attribute, before the heap is read.
TEST(BadInput, VariableLengthStringAttributesAreRefused) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const std::string shard = dir + "/val/00001.h5";
  {
    h5::File f(shard, h5::File::readonly);
    EXPECT_FALSE(h5::attr_is_variable_length_string(f, "format"));  // what ShardWriter writes
    EXPECT_FALSE(h5::attr_is_variable_length_string(f, "description", "/tokens"));
    EXPECT_FALSE(h5::attr_is_variable_length_string(f, "vocab_size"));
  }
  {
    h5::File f(shard, h5::File::truncate_checksummed);  // the old writer's way
    const std::vector<uint16_t> tokens(250, 65);
    f.create_growable_1d<uint16_t>("/tokens", 64, true);
    f.append_1d<uint16_t>("/tokens", tokens.data(), int64_t(tokens.size()));
    f.set_attr("format", std::string("rmoe-tokens"));
    EXPECT_TRUE(h5::attr_is_variable_length_string(f, "format"));
  }
  expect_error([&] { ShardDataset ds(dir); },
               {"shard '" + shard + "'", "attribute 'format'", "variable-length", "older rmoe_prepare",
                "re-run rmoe_prepare"});
  {
    h5::File meta(dir + "/dataset.h5", h5::File::truncate_checksummed);
    meta.set_attr("format", std::string("rmoe-dataset"));
  }
  expect_error([&] { dataset_vocab_size(dir); },
               {"dataset '" + dir + "/dataset.h5'", "attribute 'format'", "variable-length", "re-run rmoe_prepare"});
}

TEST(BadInput, TokenIdsOutsideTheVocabulary) {
  const std::string dir = test_dir();
  make_mixed_dataset(dir);
  const std::string shard = dir + "/train/00000.h5";
  std::vector<uint16_t> tokens(700, 10);
  tokens[450] = 300;
  write_raw_shard(shard, tokens, "rmoe-tokens", 1, 256);
  ShardBatchSource src(dir, loader_options(32, 8, 1));
  expect_error([&] { std::vector<int32_t> w(33); for (int64_t i = 0; i < 21; ++i) src.read_window(Split::train, i, w.data()); },
               {"shard '" + shard + "'", "token id 300 at position 450", "outside its vocabulary [0, 256)"});
  // The writer refuses such ids in the first place.
  auto tok = make_byte_tokenizer();
  ShardWriter w(dir + "/x.h5", *tok);
  const int32_t bad = 256;
  expect_error([&] { w.append(&bad, 1); }, {"token id 256", "outside the vocabulary", dir + "/x.h5"});
}

TEST(BadInput, ShardShorterThanOneWindowAndEmptySplit) {
  const std::string dir = test_dir();
  make_dataset(dir + "/short", {random_tokens(1, 500), random_tokens(2, 20)}, {random_tokens(3, 300)});
  expect_error([&] { ShardBatchSource(dir + "/short", loader_options(64, 4, 1)); },
               {"shard '" + dir + "/short/train/00001.h5'", "holds 20 tokens", "fewer than one window", "65"});
  EXPECT_NO_THROW(ShardBatchSource(dir + "/short", loader_options(16, 4, 1)));
  make_dataset(dir + "/noval", {random_tokens(1, 500)}, {});
  expect_error([&] { ShardDataset ds(dir + "/noval"); }, {dir + "/noval", "val split is empty"});
}

TEST(BadInput, OutputDirectoryIsProtected) {
  const std::string dir = test_dir();
  write_file(dir + "/a.txt", make_text(1, 2000));
  write_file(dir + "/b.txt", make_text(2, 2000));
  PrepareOptions o = byte_options({dir + "/a.txt"}, dir + "/ds");
  prepare_dataset(o);
  const std::string before = read_file(dir + "/ds/train/00000.h5");
  expect_error([&] { prepare_dataset(o); }, {"--output=" + dir + "/ds", "already holds a dataset", "--overwrite"});
  // A failing run with --overwrite leaves the old dataset as it was, and no temporary directory.
  PrepareOptions failing = o;
  failing.overwrite = true;
  failing.inputs = {dir + "/b.txt"};
  failing.val_tokens = 1'000'000;  // more than the input holds: fails after tokenizing
  expect_error([&] { prepare_dataset(failing); }, {"too few"});
  EXPECT_EQ(read_file(dir + "/ds/train/00000.h5"), before);
  EXPECT_NO_THROW(ShardDataset{dir + "/ds"});
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  // --overwrite replaces it.
  PrepareOptions replace = o;
  replace.overwrite = true;
  replace.inputs = {dir + "/b.txt"};
  prepare_dataset(replace);
  EXPECT_NE(read_file(dir + "/ds/train/00000.h5"), before);
  // A non-empty directory that is not a dataset is never replaced.
  fs::create_directories(dir + "/precious");
  write_file(dir + "/precious/notes.txt", "keep me");
  PrepareOptions other = replace;
  other.output = dir + "/precious";
  expect_error([&] { prepare_dataset(other); }, {"--output=" + dir + "/precious", "not empty"});
  EXPECT_EQ(read_file(dir + "/precious/notes.txt"), "keep me");
}

TEST(BadInput, UnreadableOrInvalidInputText) {
  const std::string dir = test_dir();
  // A file that exists but cannot be read: permissions (or, as root, which
  // ignores them, /proc/self/mem, whose first page is unmapped).
  std::string unreadable = dir + "/locked.txt";
  write_file(unreadable, "secret");
  fs::permissions(unreadable, fs::perms::none);
  if (::geteuid() == 0) unreadable = "/proc/self/mem";
  expect_error([&] { prepare_dataset(byte_options({unreadable}, dir + "/out")); },
               {"input '" + unreadable + "'", "cannot be read"});
  EXPECT_FALSE(fs::exists(dir + "/out"));
  // sentencepiece needs UTF-8.
  write_file(dir + "/latin1.txt", make_text(3, 3000) + "caf\xe9 au lait\n");
  PrepareOptions o = byte_options({dir + "/latin1.txt"}, dir + "/out");
  o.tokenizer = "sentencepiece";
  o.vocab_size = 350;
  expect_error([&] { prepare_dataset(o); }, {"input '" + dir + "/latin1.txt'", "invalid UTF-8 at byte offset"});
  EXPECT_FALSE(fs::exists(dir + "/out"));
  // The same bytes are fine for the byte tokenizer, but NUL is its end-of-document token.
  EXPECT_NO_THROW(prepare_dataset(byte_options({dir + "/latin1.txt"}, dir + "/out")));
  write_file(dir + "/nul.txt", "abc\ndef\0ghi"s);
  expect_error([&] { prepare_dataset(byte_options({dir + "/nul.txt"}, dir + "/out2")); },
               {"input '" + dir + "/nul.txt'", "NUL byte at byte offset 7"});
  EXPECT_FALSE(fs::exists(dir + "/out2"));
}

TEST(BadInput, CommandLineExitStatus) {
  if (!have_prepare_binary()) GTEST_SKIP() << "rmoe_prepare is not built";
  const std::string dir = test_dir();
  write_file(dir + "/a.txt", make_text(1, 500));
  CliResult r = run_prepare("--input " + dir + "/missing.txt --output " + dir + "/ds");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find(dir + "/missing.txt: does not exist"), std::string::npos) << r.output;
  r = run_prepare("--input " + dir + "/a.txt --output " + dir + "/ds --bogus");
  EXPECT_EQ(r.status, 2) << r.output;
  r = run_prepare("--input " + dir + "/a.txt --output " + dir + "/ds --val-tokens 5 --val-fraction 0.5");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("not both"), std::string::npos) << r.output;
  r = run_prepare("--input " + dir + "/a.txt --output " + dir + "/ds --vocab-size 300");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("--vocab-size applies to --tokenizer sentencepiece"), std::string::npos) << r.output;
  r = run_prepare("--input " + dir + "/a.txt --output " + dir + "/ds --quiet");
  EXPECT_EQ(r.status, 0) << r.output;
  r = run_prepare("--input " + dir + "/a.txt --output " + dir + "/ds --quiet");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("already holds a dataset"), std::string::npos) << r.output;
  EXPECT_EQ(run_prepare("--help").status, 0);
}

// The reproducers of fuzz findings F1 and F2 (tests/fuzz/README.md), files of
// the old writers damaged by the fuzzer: F1 hung HDF5 forever (a damaged
// global heap under a variable-length string attribute), F2 made it allocate
// 4 GiB (a damaged chunk size in the unchecksummed 1.8 chunk index). Each is
// now rejected at once, naming the file, and nothing large is allocated.
TEST(BadInput, FuzzFindingsF1AndF2AreRejectedQuickly) {
  const std::string dir = test_dir(), findings = std::string(RMOE_SOURCE_DIR) + "/tests/fuzz/findings/";
  for (const char* name : {"shard_vlen_string_global_heap_hang.h5", "shard_chunk_index_4GiB_malloc.h5"}) {
    const std::string path = findings + name;
    ASSERT_TRUE(fs::exists(path)) << path;
    const std::string verdict = in_child_with_watchdog(20, [&]() -> std::string {
      const int64_t peak = vm_peak_kb();
      try {
        read_shard(path);
        return "accepted";
      } catch (const Error& e) {
        const std::string msg = e.what();
        if (msg.find("shard '" + path + "'") == std::string::npos) return "the message does not name the file: " + msg;
        if (vm_peak_kb() - peak > (int64_t(1) << 20)) return "more than 1 GiB allocated: " + msg;
        return "";
      }
    });
    EXPECT_EQ(verdict, "") << name;
  }
  // F1 in dataset.h5: fuzz_tokenizer's mode 2 input is a mode byte, then the file.
  const std::string bin = read_file(findings + "dataset_meta_vlen_string_global_heap_hang.bin");
  ASSERT_GT(bin.size(), 1u);
  fs::create_directories(dir + "/ds");
  write_file(dir + "/ds/dataset.h5", bin.substr(1));
  const std::string verdict = in_child_with_watchdog(20, [&]() -> std::string {
    try {
      dataset_vocab_size(dir + "/ds");
      ShardDataset ds(dir + "/ds");
      return "accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      return msg.find(dir + "/ds/dataset.h5") == std::string::npos ? "the message does not name the file: " + msg : "";
    }
  });
  EXPECT_EQ(verdict, "") << "dataset_meta_vlen_string_global_heap_hang.bin";
}

// Fuzz finding F5 (tests/fuzz/README.md): a SentencePiece model with a piece
// that starts with a NUL byte made SentencePiece's trie builder throw its own
// exception (not an rmoe::Error), which escaped load_tokenizer. The input is
// fuzz_tokenizer's mode byte, then the serialized model.
TEST(BadInput, FuzzFindingF5SentencePieceTrieErrorIsAnInputError) {
  const std::string bin =
      read_file(std::string(RMOE_SOURCE_DIR) + "/tests/fuzz/findings/tokenizer_nul_piece_darts_exception.bin");
  ASSERT_GT(bin.size(), 1u);
  try {
    load_tokenizer("sentencepiece", bin.substr(1), "dataset.h5:/tokenizer_model");
    FAIL() << "a model with a NUL-led piece was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("dataset.h5:/tokenizer_model: not a valid SentencePiece model"), std::string::npos) << msg;
  }
}

// Every single flipped bit of a shard and of dataset.h5, one file at a time:
// the reader rejects the file with an rmoe::Error or reads exactly what was
// written, within the watchdog and without a large allocation (F1, F2: the
// old writers' files hung or allocated 4 GiB on some such flips).
TEST(BadInput, EveryFlippedBitIsDetectedOrHarmless) {
  const std::string dir = test_dir();
  make_dataset(dir + "/ds", {random_tokens(1, 300)}, {random_tokens(2, 200)});
  const std::string shard = dir + "/ds/train/00000.h5", meta = dir + "/ds/dataset.h5";
  const ShardContents want = read_shard(shard);
  const std::string shard_bytes = read_file(shard), meta_bytes = read_file(meta);
  const std::string verdict = in_child_with_watchdog(240, [&]() -> std::string {
    const int64_t peak = vm_peak_kb();
    std::string wrong;
    int rejected = 0;
    for (size_t i = 0; i < shard_bytes.size(); ++i) {
      std::string bytes = shard_bytes;
      bytes[i] = char(bytes[i] ^ (1 << (i % 8)));
      const std::string path = dir + "/flip_" + std::to_string(i) + ".h5";  // fresh names: HDF5 caches open files
      write_file(path, bytes);
      try {
        if (!(read_shard(path) == want)) wrong += " shard byte " + std::to_string(i) + ": read different data;";
      } catch (const Error&) {
        ++rejected;
      }
      fs::remove(path);
    }
    const auto byte = make_byte_tokenizer();
    for (size_t i = 0; i < meta_bytes.size(); ++i) {
      std::string bytes = meta_bytes;
      bytes[i] = char(bytes[i] ^ (1 << (i % 8)));
      write_file(meta, bytes);
      try {
        const ShardDataset ds(dir + "/ds");
        const DatasetSummary& s = ds.summary();
        if (ds.vocab_size() != 256 || ds.tokenizer().fingerprint() != byte->fingerprint() || s.train_tokens != 300 ||
            s.val_tokens != 200 || s.train_shards != 1 || s.val_shards != 1)
          wrong += " dataset.h5 byte " + std::to_string(i) + ": read different values;";
      } catch (const Error&) {
        ++rejected;
      }
    }
    write_file(meta, meta_bytes);
    if (rejected == 0) wrong += " no flip was rejected at all;";
    if (vm_peak_kb() - peak > (int64_t(1) << 20)) wrong += " more than 1 GiB allocated;";
    return wrong;
  });
  EXPECT_EQ(verdict, "") << shard_bytes.size() << " + " << meta_bytes.size() << " bytes";
}

// A shard that cannot be written (a file size limit stands in for a full
// disk; SIGXFSZ ignored, so writes fail with EFBIG as they would with
// ENOSPC): one line naming the shard, status 1, nothing left behind. (It used
// to say the shard had no 'format' attribute, and HDF5's exit handler then
// crashed on the file it had failed to close: status 139.)
TEST(BadInput, ShardThatCannotBeWrittenIsAFailure) {
  if (!have_prepare_binary()) GTEST_SKIP() << "rmoe_prepare is not built";
  const std::string dir = test_dir();
  write_file(dir + "/big.txt", make_text(4, 60000));  // ~200 KB: shards of 150000 tokens exceed 100 KB
  const std::string cmd = "trap '' XFSZ; ulimit -f 100; " + std::string(RMOE_BINARY_DIR) + "/rmoe_prepare --input " +
                          dir + "/big.txt --output " + dir + "/ds --tokenizer byte --val-tokens 1000 --quiet 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_TRUE(p);
  std::string out;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  const int st = pclose(p);
  ASSERT_TRUE(WIFEXITED(st)) << "ended by a signal; output:\n" << out;
  EXPECT_EQ(WEXITSTATUS(st), 1) << out;
  EXPECT_NE(out.find("rmoe_prepare: error: "), std::string::npos) << out;
  EXPECT_NE(out.find("/staging/00000.h5"), std::string::npos) << out;
  EXPECT_NE(out.find("disk full?"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line: " << out;
  EXPECT_FALSE(fs::exists(dir + "/ds"));
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace rmoe
