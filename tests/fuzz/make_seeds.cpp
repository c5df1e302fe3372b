// make_seeds.cpp — writes the seed corpora of the fuzz targets with rmoe's own
// writers (ShardWriter, the h5 wrapper, save_checkpoint, train_sentencepiece,
// write_dataset_meta), and checks each seed against its target (targets.h):
// the valid ones must be accepted, the broken ones rejected with an
// rmoe::Error. The committed corpus tests/fuzz/corpus/ was made with
//
//   build-asan/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
//
// (HDF5 stores object times, so a new run gives other bytes, not other
// content). ctest's fuzz_make_seeds runs it into the build tree so it keeps
// working. Usage: fuzz_make_seeds OUT_DIR   (writes OUT_DIR/<target>/...)
#include <cstdio>
#include <string>
#include <vector>

#include "targets.h"

using namespace rmoe;
using namespace rmoe::fuzz;

namespace {

int failures = 0;  // seeds with the wrong verdict

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Writes one seed and checks the target's verdict on it.
template <class Run>
void seed(const std::string& dir, const std::string& name, const std::string& bytes, bool valid, Run run) {
  fs::create_directories(dir);
  write_file((fs::path(dir) / name).string(), bytes);
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  std::string why;
  const bool accepted = [&] {
    try {
      run(p, bytes.size());
      return true;
    } catch (const Error& e) {
      why = e.what();
      return false;
    }
  }();
  const bool ok = accepted == valid && check_contract([&] { run(p, bytes.size()); }) == accepted;
  std::printf("%-6s %-12s %-40s %7zu B  %s%s\n", ok ? "ok" : "WRONG", fs::path(dir).filename().c_str(), name.c_str(),
              bytes.size(), accepted ? "accepted" : "rejected: ", why.substr(0, 110).c_str());
  if (!ok) ++failures;
}

// A file's bytes with one byte flipped (a bit flip on disk).
std::string flipped(std::string bytes, size_t at) {
  bytes[at % bytes.size()] ^= 0x10;
  return bytes;
}

// ---- a tokenizer that only names a vocabulary (for shards of a wide vocabulary) -------

class NamedTokenizer final : public Tokenizer {
 public:
  NamedTokenizer(std::string name, int vocab, int eod, std::string blob = "")
      : name_(std::move(name)), vocab_(vocab), eod_(eod), blob_(std::move(blob)) {}
  std::string name() const override { return name_; }
  int vocab_size() const override { return vocab_; }
  int eod_id() const override { return eod_; }
  void encode(std::string_view, std::vector<int32_t>&) const override {}
  std::string decode(const int32_t*, int64_t, std::string_view) const override { return ""; }
  std::string serialize() const override { return blob_; }

 private:
  std::string name_;
  int vocab_, eod_;
  std::string blob_;
};

const char* kText =
    "In the beginning God created the heaven and the earth.\n"
    "And the earth was without form, and void; and darkness was upon the face of the deep.\n"
    "And the Spirit of God moved upon the face of the waters.\n"
    "And God said, Let there be light: and there was light.\n";

// ---- 1. configuration --------------------------------------------------------------------

void config_seeds(const std::string& out, const std::string& source_dir) {
  const std::string dir = out + "/config";
  const std::string tiny = read_file(source_dir + "/configs/tiny.ini");
  if (tiny.empty()) {
    std::printf("WRONG  cannot read %s/configs/tiny.ini\n", source_dir.c_str());
    ++failures;
  }
  seed(dir, "tiny.ini", tiny, true, run_config);
  seed(dir, "resolved_defaults.ini", config_to_ini(parse_args({"rmoe_train"})), true, run_config);
  seed(dir, "tiny_with_argv.ini",
       tiny + "#argv\n--moe-router-type=linear\n--lr\n3e-3\n--router-detach\n--save=ck\n--save-interval=5\n", true,
       run_config);
  seed(dir, "dry_run_24l.ini",
       "num-layers = 24\nhidden-size = 1024\nnum-attention-heads = 16\nnum-experts = 16\nmoe-router-topk = 2\n"
       "dry-run = true\n#argv\n--dry-run-ranks=8\n--expert-parallel-size=8\n",
       true, run_config);
  seed(dir, "help.ini", "#argv\n--help\n", true, run_config);
  seed(dir, "broken_unknown_key.ini", "num-layer = 2\n", false, run_config);
  seed(dir, "broken_value.ini", "num-layers = two\n", false, run_config);
  seed(dir, "broken_topk.ini", "num-experts = 4\nmoe-router-topk = 5\n", false, run_config);
  seed(dir, "broken_section.ini", "[model]\nnum-layers = 2\n", false, run_config);
  seed(dir, "broken_argv_value.ini", "lr = 1e-3\n#argv\n--lr=abc\n", false, run_config);
  seed(dir, "broken_stray_argument.ini", "#argv\nstray\n", false, run_config);
}

// ---- 2. shards ------------------------------------------------------------------------------

std::string written_shard(const Removed& tmp, const Tokenizer& tok, const std::vector<int32_t>& ids,
                          const std::vector<int64_t>& docs, int64_t chunk) {
  ShardWriter w(tmp.path, tok, chunk);
  w.append(ids.data(), int64_t(ids.size()));
  w.finish(docs);
  return read_file(tmp.path);
}

// A shard-shaped file written field by field (for the damaged headers) the
// way ShardWriter writes one: fixed-length strings and checksummed chunk
// indexes (README.md, F1 and F2).
struct RawShard {
  std::string format = kShardFormat;
  int64_t version = kShardVersion, vocab = 256, count_delta = 0;
  bool fletcher = true;
  std::vector<uint16_t> ids = {72, 101, 108, 108, 111, 0};
};
std::string raw_shard(const Removed& tmp, const RawShard& r) {
  {
    h5::File f(tmp.path, h5::File::truncate_checksummed);
    h5::use_checksummed_chunk_indexes(f);
    f.create_growable_1d<uint16_t>("/tokens", 4, r.fletcher);
    f.append_1d<uint16_t>("/tokens", r.ids.data(), int64_t(r.ids.size()));
    h5::set_attr_fixed_string(f, "format", r.format);
    f.set_attr("version", r.version);
    f.set_attr("vocab_size", r.vocab);
    f.set_attr("eod_id", int64_t(0));
    h5::set_attr_fixed_string(f, "tokenizer", "byte");
    h5::set_attr_fixed_string(f, "tokenizer_fingerprint", make_byte_tokenizer()->fingerprint());
    f.set_attr("token_count", int64_t(r.ids.size()) + r.count_delta);
  }
  return read_file(tmp.path);
}

void shard_seeds(const std::string& out) {
  const std::string dir = out + "/shard";
  const Removed tmp{Scratch::get().fresh("seed_shard") + ".h5"};
  const auto byte = make_byte_tokenizer();
  std::vector<int32_t> ids;
  std::vector<int64_t> docs;
  for (const char* doc : {"In the beginning God created the heaven and the earth.", "And God said, Let there be light."}) {
    docs.push_back(int64_t(ids.size()));
    byte->encode(doc, ids);
    ids.push_back(byte->eod_id());
  }
  const std::string byte_shard = written_shard(tmp, *byte, ids, docs, 16);
  seed(dir, "byte_two_docs.h5", byte_shard, true, run_shard);
  seed(dir, "byte_no_doc_offsets.h5", written_shard(tmp, *byte, ids, {}, 32), true, run_shard);
  seed(dir, "byte_empty.h5", written_shard(tmp, *byte, {}, {}, 16), true, run_shard);
  const NamedTokenizer wide("sentencepiece", 70000, 2);
  std::vector<int32_t> wide_ids = {5, 69999, 65536, 2, 300, 2};
  seed(dir, "uint32_vocab70000.h5", written_shard(tmp, wide, wide_ids, {0, 4}, 4), true, run_shard);
  // The first token chunk: "In the b" as uint16 little-endian.
  const size_t tokens_at = byte_shard.find(std::string("I\0n\0 \0t\0h\0e\0", 12));
  if (tokens_at == std::string::npos) {
    std::printf("WRONG  cannot find the token bytes in the shard\n");
    ++failures;
  }
  seed(dir, "broken_truncated.h5", byte_shard.substr(0, byte_shard.size() / 2), false, run_shard);
  seed(dir, "broken_bitflip_tokens.h5", flipped(byte_shard, tokens_at + 6), false, run_shard);
  seed(dir, "broken_version.h5", raw_shard(tmp, RawShard{.version = 2}), false, run_shard);
  seed(dir, "broken_id_outside_vocab.h5", raw_shard(tmp, RawShard{.vocab = 100}), false, run_shard);
  seed(dir, "broken_token_count.h5", raw_shard(tmp, RawShard{.count_delta = 1}), false, run_shard);
  seed(dir, "broken_no_checksums.h5", raw_shard(tmp, RawShard{.fletcher = false}), false, run_shard);
  seed(dir, "broken_not_hdf5.h5", "rmoe-tokens v1\n", false, run_shard);
}

// ---- 3. checkpoints ----------------------------------------------------------------------------

std::string saved_checkpoint(const std::string& dir, const ModelConfig& model, const std::string& config_ini,
                             int64_t step) {
  ProcessGroups g = make_process_groups(make_self_comm(), 0, model.num_experts);
  ParamStore<float> params(model_param_specs(model));
  params.init(7, 0.02);
  std::vector<float> m_rep(params.replicated().size(), 0.01f), v_rep(m_rep.size(), 0.001f);
  std::vector<float> m_exp(params.expert().size(), -0.01f), v_exp(m_exp.size(), 0.002f);
  TrainState s;
  s.params = &params;
  s.m_rep = &m_rep;
  s.v_rep = &v_rep;
  s.m_exp = &m_exp;
  s.v_exp = &v_exp;
  s.step = step;
  s.consumed_tokens = step * 32;
  s.seed = 1234;
  s.config_ini = config_ini;
  const std::string path = save_checkpoint(dir, s, g, 0);
  std::string bytes = read_file(path);
  fs::remove(path);
  return bytes;
}

std::string ini_of(const ModelConfig& m) {
  TrainConfig c;
  c.model = m;
  c.micro_batch_size = 1;
  c.global_batch_size = 2;
  c.train_iters = 4;
  c.lr_decay_iters = c.resolved_lr_decay_iters();
  validate_train_config(c);
  return config_to_ini(c);
}

void checkpoint_seeds(const std::string& out) {
  const std::string dir = out + "/checkpoint";
  const Removed tmp{Scratch::get().fresh("seed_ckpt")};
  const ModelConfig tiny = tiny_checkpoint_model();
  seed(dir, "tiny_gru.h5", saved_checkpoint(tmp.path, tiny, ini_of(tiny), 3), true, run_checkpoint);
  ModelConfig lin = tiny;
  lin.router_type = RouterType::linear;
  lin.tie_embeddings = true;
  lin.num_experts = 1;
  const std::string small = saved_checkpoint(tmp.path, lin, ini_of(lin), 1);
  seed(dir, "tiny_linear_tied_1expert.h5", small, true, run_checkpoint);
  ModelConfig wider = lin;
  wider.hidden_size = 8;
  seed(dir, "broken_config_mismatch.h5", saved_checkpoint(tmp.path, lin, ini_of(wider), 2), false, run_checkpoint);
  seed(dir, "broken_truncated.h5", small.substr(0, small.size() / 2), false, run_checkpoint);
  const Removed shard{Scratch::get().fresh("seed_ckpt_shard") + ".h5"};
  seed(dir, "broken_a_shard.h5", raw_shard(shard, RawShard{}), false, run_checkpoint);
}

// ---- 4. tokenizers ---------------------------------------------------------------------------------

std::string dataset_meta(const Removed& tmp, const Tokenizer& tok) {
  fs::create_directories(tmp.path);
  DatasetSummary s;
  s.documents = 1;
  s.input_bytes = 100;
  s.train_tokens = kDatasetSplitTokens;
  s.val_tokens = kDatasetSplitTokens;
  s.train_shards = 1;
  s.val_shards = 1;
  s.created_by = "fuzz_make_seeds";
  write_dataset_meta(tmp.path, tok, s);
  return read_file((fs::path(tmp.path) / kDatasetMetaFile).string());
}

std::unique_ptr<Tokenizer> trained(const std::string& type) {
  std::vector<std::string> lines;
  std::string text = kText;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = text.find('\n', pos);
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  size_t i = 0;
  SentencePieceTrainOptions o;
  o.vocab_size = 300;
  o.model_type = type;
  o.num_threads = 1;
  return train_sentencepiece(
      [&](std::string& s) {
        if (i >= lines.size() * 8) return false;
        s = lines[i++ % lines.size()];
        return true;
      },
      o);
}

void tokenizer_seeds(const std::string& out) {
  const std::string dir = out + "/tokenizer";
  const auto bpe = trained("bpe");
  const auto unigram = trained("unigram");
  const std::string bpe_blob = bpe->serialize();
  seed(dir, "0_blob_bpe300", std::string(1, '\0') + bpe_blob, true, run_tokenizer);
  seed(dir, "1_model_file_unigram300", "\x01" + unigram->serialize(), true, run_tokenizer);
  const Removed tmp{Scratch::get().fresh("seed_dataset")};
  seed(dir, "2_dataset_sentencepiece", "\x02" + dataset_meta(tmp, *bpe), true, run_tokenizer);
  seed(dir, "2_dataset_byte", "\x02" + dataset_meta(tmp, *make_byte_tokenizer()), true, run_tokenizer);
  seed(dir, "broken_0_not_a_model", std::string(1, '\0') + "not a model", false, run_tokenizer);
  seed(dir, "broken_1_truncated_model", "\x01" + bpe_blob.substr(0, bpe_blob.size() / 2), false, run_tokenizer);
  seed(dir, "broken_2_vocab_mismatch",
       "\x02" + dataset_meta(tmp, NamedTokenizer("byte", 300, 0)), false, run_tokenizer);
  seed(dir, "broken_2_unknown_tokenizer",
       "\x02" + dataset_meta(tmp, NamedTokenizer("wordpiece", 1000, 1, "vocab")), false, run_tokenizer);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each verdict shows even if a later seed crashes
  const std::string out = argv[1];
  config_seeds(out, RMOE_SOURCE_DIR);
  shard_seeds(out);
  checkpoint_seeds(out);
  tokenizer_seeds(out);
  if (failures) {
    std::printf("fuzz_make_seeds: %d seed(s) with the WRONG verdict\n", failures);
    return 1;
  }
  std::printf("fuzz_make_seeds: every seed has the expected verdict; written to %s\n", out.c_str());
  return 0;
}
