// targets.h — what each fuzz target does with one input, shared by the
// libFuzzer entry points (fuzz_*.cpp) and the seed generator (make_seeds.cpp,
// which checks that its valid seeds are accepted and its broken ones
// rejected).
//
// Contract (every target): an input is either accepted, or rejected by an
// rmoe::Error (UsageError derives from it) with a non-empty message. Any other
// exception, an rmoe::Error with an empty message, a crash, a sanitizer report,
// a hang (-timeout) or a broken invariant checked below is a finding:
// check_contract() aborts for the first two, which libFuzzer reports as a crash
// and saves the input.
//
// Each run_*() throws rmoe::Error to reject and returns normally to accept.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"
#include "rmoe/data/dataset.h"
#include "rmoe/data/shard.h"
#include "rmoe/data/tokenizer.h"
#include "rmoe/model/params.h"
#include "rmoe/parallel/comm.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"

namespace rmoe::fuzz {

namespace fs = std::filesystem;

// ---- the contract ----------------------------------------------------------------

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "\nFUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs f(); true if it returned (accepted), false if it threw rmoe::Error with
// a message (rejected). Aborts for anything else.
template <class F>
bool check_contract(F&& f) {
  try {
    f();
    return true;
  } catch (const Error& e) {
    if (e.what() == nullptr || e.what()[0] == '\0')
      finding(std::string("rejected with an rmoe::Error (") + typeid(e).name() + ") whose message is empty");
    return false;
  } catch (const std::exception& e) {
    finding(std::string("an exception that is not an rmoe::Error escaped: ") + typeid(e).name() + ": " + e.what());
  } catch (...) {
    finding("an exception that is not a std::exception escaped");
  }
}

// ---- scratch files ------------------------------------------------------------------

// One directory per process under $TMPDIR (or /tmp), removed at exit. Every
// input gets fresh names: HDF5 caches open files by name and inode, so a
// reused name could meet a stale handle if one ever leaked.
class Scratch {
 public:
  static Scratch& get() {
    static Scratch s;
    return s;
  }
  // A new path inside the scratch directory (nothing is created).
  std::string fresh(const std::string& stem) {
    return (fs::path(dir_) / (stem + "_" + std::to_string(counter_++))).string();
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

 private:
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/rmoe_fuzz_XXXXXX";
    if (!::mkdtemp(templ.data())) finding("cannot create a scratch directory in $TMPDIR (harness problem)");
    dir_ = templ;
  }
  std::string dir_;
  uint64_t counter_ = 0;
};

// Removes a file or directory when it goes out of scope.
struct Removed {
  std::string path;
  ~Removed() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  if (!out) finding("cannot write scratch file " + path + " (harness problem)");
}

inline std::string_view as_text(const uint8_t* data, size_t n) {
  return std::string_view(reinterpret_cast<const char*>(data), n);
}

// ---- 1. the training configuration: INI file (+ optional command line) -------------

// Input: the text of an INI file given as --config FILE. If a line "#argv"
// occurs (an INI comment, so the file part ignores it), every later line is
// one more command-line argument after --config (arguments naming another
// --config are dropped: they would read arbitrary files). So both the file and
// the command-line paths and their precedence are reached.
// Accepted configurations must survive config_to_ini: the text it writes is
// what checkpoints store and rmoe_eval / rmoe_generate read back
// (parse_train_config_from_ini), so reading it back must give the same text
// (else a finding). Every input is run as it is: findings F3 (values the INI
// form cannot carry) and F4 (Boost's placeholder loop) are fixed in
// src/train/config.cpp (README.md, Findings), so nothing is left out.

inline TrainConfig parse_args(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return parse_train_config(int(argv.size()), argv.data());
}

inline void run_config(const uint8_t* data, size_t n) {
  const std::string_view input = as_text(data, n);
  std::string_view ini = input, rest;
  for (size_t pos = 0; pos <= input.size();) {
    const size_t end = std::min(input.find('\n', pos), input.size());
    if (input.substr(pos, end - pos) == "#argv") {
      ini = input.substr(0, pos);
      rest = end < input.size() ? input.substr(end + 1) : std::string_view();
      break;
    }
    pos = end + 1;
  }
  Scratch& scratch = Scratch::get();
  const Removed file{scratch.fresh("config") + ".ini"};
  write_file(file.path, ini);
  std::vector<std::string> args = {"rmoe_train", "--config=" + file.path};
  for (size_t pos = 0; pos < rest.size();) {
    const size_t end = std::min(rest.find('\n', pos), rest.size());
    std::string arg(rest.substr(pos, end - pos));
    arg.resize(std::strlen(arg.c_str()));  // a real argv string ends at its first NUL
    pos = end + 1;
    if (arg.find("-config") != std::string::npos) continue;
    args.push_back(arg);
  }
  const TrainConfig cfg = parse_args(args);
  if (cfg.help) {
    if (cfg.help_text.empty()) finding("--help gave an empty help text");
    return;
  }
  // The round trip through config_to_ini: the text a checkpoint stores, read
  // back the way rmoe_eval / rmoe_generate read it.
  const std::string text = config_to_ini(cfg);
  TrainConfig back;
  if (!check_contract([&] { back = parse_train_config_from_ini(text, "config_to_ini text", {}); }))
    finding("config_to_ini wrote a configuration that parse_train_config_from_ini rejects:\n" + text);
  const std::string text2 = config_to_ini(back);
  if (text2 != text) finding("config_to_ini -> parse_train_config_from_ini -> config_to_ini changed the text:\n" + text +
                             "---\n" + text2);
}

// ---- 2. a token shard ------------------------------------------------------------------

// Input: the bytes of one shard file. ShardReader opens and validates it; then
// the first and last (up to) 64K tokens are read in blocks, and /doc_offsets.
// Invariants of an opened shard: 2- or 4-byte ids, vocab_size >= 2, every id
// read inside [0, vocab_size) (the reader promises to check), reads past the
// end rejected.
inline void run_shard_file(const std::string& path) {
  ShardReader r(path);
  const ShardHeader& h = r.header();
  if (h.token_bytes != 2 && h.token_bytes != 4) finding("ShardReader accepted token_bytes " + std::to_string(h.token_bytes));
  if (h.vocab_size < 2) finding("ShardReader accepted vocab_size " + std::to_string(h.vocab_size));
  if (h.token_count < 0) finding("ShardReader accepted token_count " + std::to_string(h.token_count));
  constexpr int64_t kBlock = 4096, kEdge = 65536;
  std::vector<int32_t> buf(static_cast<size_t>(kBlock));
  auto read_range = [&](int64_t from, int64_t to) {
    for (int64_t off = from; off < to; off += kBlock) {
      const int64_t m = std::min(kBlock, to - off);
      r.read(off, m, buf.data());
      for (int64_t i = 0; i < m; ++i)
        if (buf[size_t(i)] < 0 || buf[size_t(i)] >= h.vocab_size)
          finding("ShardReader::read returned id " + std::to_string(buf[size_t(i)]) + " outside [0, " +
                  std::to_string(h.vocab_size) + ")");
    }
  };
  const int64_t head = std::min(h.token_count, kEdge);
  read_range(0, head);
  read_range(std::max(head, h.token_count - kEdge), h.token_count);
  const std::vector<int64_t> docs = r.doc_offsets();
  if (h.num_documents >= 0 && int64_t(docs.size()) != h.num_documents)
    finding("doc_offsets() returned " + std::to_string(docs.size()) + " entries, the header says " +
            std::to_string(h.num_documents));
  // Past the end: must be rejected (with a message), never read.
  const bool past_end = check_contract([&] { r.read(h.token_count, 1, buf.data()); });
  if (past_end) finding("ShardReader::read past the end was accepted");
}

inline void run_shard(const uint8_t* data, size_t n) {
  const Removed file{Scratch::get().fresh("shard") + ".h5"};
  write_file(file.path, as_text(data, n));
  run_shard_file(file.path);
}

// ---- 3. a checkpoint -----------------------------------------------------------------------

// The model the checkpoint seeds are saved with (make_seeds.cpp), and the one
// a checkpoint is loaded into when its own configuration is unusable here.
inline ModelConfig tiny_checkpoint_model() {
  ModelConfig c;
  c.num_layers = 1;
  c.hidden_size = 4;
  c.num_heads = 1;
  c.num_experts = 2;
  c.topk = 1;
  c.ffn_hidden_size = 2;
  c.router_dim = 2;
  c.vocab_size = 8;
  c.seq_length = 4;
  c.router_type = RouterType::gru;
  return c;
}

// A harness bound, not a property of rmoe: the fuzzer must not make us
// allocate a model a checkpoint only claims to have. Every dimension is
// bounded first so that the parameter count itself cannot overflow.
inline bool small_enough_to_load(const ModelConfig& m) {
  if (m.num_layers > 8 || m.hidden_size > 256 || m.num_experts > 16 || m.ffn_hidden_size > 256 ||
      m.router_dim > 256 || m.vocab_size > 4096)
    return false;
  int64_t total = 0;
  for (const ParamSpec& s : model_param_specs(m)) total += s.numel();
  return total <= (int64_t(1) << 20);
}

// Input: the bytes of one checkpoint file. As rmoe_eval / rmoe_train --load:
// read_checkpoint_header, the stored configuration parsed by
// parse_train_config_from_ini (what rmoe_eval and rmoe_generate call), then
// load_checkpoint with the AdamW moments (resume) and without (evaluation)
// into that model in one process, or into tiny_checkpoint_model() when the
// stored configuration is rejected or too large for this harness.
inline void run_checkpoint_file(const std::string& path) {
  const CheckpointHeader h = read_checkpoint_header(path);
  ModelConfig model = tiny_checkpoint_model();
  TrainConfig cfg;
  if (check_contract([&] { cfg = parse_train_config_from_ini(h.config_ini, path, {}); }) &&
      small_enough_to_load(cfg.model))
    model = cfg.model;
  ProcessGroups groups = make_process_groups(make_self_comm(), 0, model.num_experts);
  ParamStore<float> params(model_param_specs(model, groups.first_local_expert, groups.num_local_experts));
  std::vector<float> m_rep, v_rep, m_exp, v_exp;
  TrainState s;
  s.params = &params;
  s.m_rep = &m_rep;
  s.v_rep = &v_rep;
  s.m_exp = &m_exp;
  s.v_exp = &v_exp;
  load_checkpoint(path, s, groups);
  if (s.step != h.step || s.seed != h.seed || s.config_ini != h.config_ini)
    finding("load_checkpoint's step/seed/config differ from read_checkpoint_header's");
  TrainState eval;
  eval.params = &params;
  load_checkpoint(path, eval, groups);
}

inline void run_checkpoint(const uint8_t* data, size_t n) {
  const Removed file{Scratch::get().fresh("ckpt") + ".h5"};
  write_file(file.path, as_text(data, n));
  run_checkpoint_file(file.path);
}

// ---- 4. a tokenizer ------------------------------------------------------------------------

// What every loaded tokenizer must do: a consistent vocabulary, encode to ids
// inside it, decode those ids and any in-range ids, reject an out-of-range id.
inline void exercise_tokenizer(const Tokenizer& tok) {
  const int vocab = tok.vocab_size();
  if (vocab < 2 || tok.eod_id() < 0 || tok.eod_id() >= vocab)
    finding("tokenizer " + tok.name() + " loaded with vocab_size " + std::to_string(vocab) + ", eod_id " +
            std::to_string(tok.eod_id()));
  (void)tok.fingerprint();
  (void)tok.describe();
  const std::string text = "In the beginning 1611, caf\xc3\xa9 \xe2\x82\xac\t\xf0\x9f\x98\x80 end.\n  x";
  std::vector<int32_t> ids;
  tok.encode(text, ids);
  for (int32_t id : ids)
    if (id < 0 || id >= vocab) finding("encode gave id " + std::to_string(id) + " outside [0, " + std::to_string(vocab) + ")");
  (void)tok.decode(ids.data(), int64_t(ids.size()), "\n");
  std::vector<int32_t> all;
  for (int32_t i = 0; i < std::min(vocab, 512); ++i) all.push_back(i);
  all.push_back(vocab - 1);
  (void)tok.decode(all.data(), int64_t(all.size()), "<eod>");
  const int32_t bad = vocab;
  if (check_contract([&] { (void)tok.decode(&bad, 1); })) finding("decode accepted id " + std::to_string(bad));
}

// The token count of each split of a mode-2 dataset (its dataset.h5 seeds say so).
inline constexpr int64_t kDatasetSplitTokens = 16;

// Writes one shard of kDatasetSplitTokens ids of `tok` (make_seeds.cpp uses it too).
inline void write_split_shard(const std::string& dir, const char* split, const Tokenizer& tok) {
  fs::create_directories(fs::path(dir) / split);
  ShardWriter w((fs::path(dir) / split / "00000.h5").string(), tok, /*chunk_tokens=*/8);
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < kDatasetSplitTokens; ++i) ids.push_back(int32_t(i % tok.vocab_size()));
  ids.back() = tok.eod_id();
  w.append(ids.data(), int64_t(ids.size()));
  w.finish({0});
}

// Input: a mode byte, then the payload.
//   mode 0: a serialized tokenizer blob: load_tokenizer("sentencepiece", blob)
//           (what a dataset's /tokenizer_model holds)
//   mode 1: a SentencePiece .model file: load_sentencepiece_model_file
//           (rmoe_prepare --tokenizer-model)
//   mode 2: a dataset's dataset.h5: dataset_vocab_size, then (when the harness
//           can read its tokenizer to write two matching one-shard splits of
//           kDatasetSplitTokens tokens) ShardDataset and verify_all, as
//           rmoe_train --data-path does; the dataset's tokenizer is exercised.
// Every loaded tokenizer then goes through exercise_tokenizer.
inline void run_tokenizer(const uint8_t* data, size_t n) {
  if (n == 0) throw UsageError("empty input (no mode byte)");
  const int mode = data[0] % 3;
  const std::string_view payload = as_text(data + 1, n - 1);
  Scratch& scratch = Scratch::get();
  if (mode == 0) {
    exercise_tokenizer(*load_tokenizer("sentencepiece", std::string(payload), "fuzz input"));
  } else if (mode == 1) {
    const Removed file{scratch.fresh("tok") + ".model"};
    write_file(file.path, payload);
    exercise_tokenizer(*load_sentencepiece_model_file(file.path));
  } else {
    const Removed dir{scratch.fresh("dataset")};
    fs::create_directories(dir.path);
    const std::string meta = (fs::path(dir.path) / kDatasetMetaFile).string();
    write_file(meta, payload);
    (void)dataset_vocab_size(dir.path);
    // The shards must carry the dataset's own tokenizer, so read it the way
    // ShardDataset does; a file that does not get this far is left to
    // ShardDataset alone (it must reject it).
    std::unique_ptr<Tokenizer> tok;
    check_contract([&] {
      h5::File f(meta, h5::File::readonly);
      std::string blob;
      if (f.exists("/tokenizer_model")) {
        const std::vector<uint8_t> bytes = f.read<uint8_t>("/tokenizer_model");
        blob.assign(bytes.begin(), bytes.end());
      }
      tok = load_tokenizer(f.attr_string("tokenizer"), blob, meta);
    });
    if (tok) {
      write_split_shard(dir.path, "train", *tok);
      write_split_shard(dir.path, "val", *tok);
    }
    const ShardDataset ds(dir.path);
    if (!tok) finding("ShardDataset opened a dataset whose tokenizer the harness could not load");
    exercise_tokenizer(ds.tokenizer());
    ds.verify_all();
  }
}

}  // namespace rmoe::fuzz
