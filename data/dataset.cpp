// dataset.cpp — dataset directories (see dataset.h).
#include "rmoe/data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"

namespace rmoe {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void meta_error(const std::string& path, const std::string& problem) {
  throw InputError("dataset '" + path + "' " + problem);
}

// Opens DIR/dataset.h5 after checking DIR, with messages that name the path.
std::unique_ptr<h5::File> open_meta(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec))
    throw InputError("--data-path=" + dir + ": does not exist; create a dataset with rmoe_prepare");
  if (!fs::is_directory(dir, ec))
    throw InputError("--data-path=" + dir + ": is not a directory; give a dataset directory made by rmoe_prepare");
  const std::string meta = (fs::path(dir) / kDatasetMetaFile).string();
  if (!fs::exists(meta, ec))
    throw InputError("--data-path=" + dir + ": is not an rmoe dataset (no " + kDatasetMetaFile +
                     "); create one with rmoe_prepare");
  if (!h5::is_hdf5_file(meta)) meta_error(meta, "is not an HDF5 file (or cannot be read)");
  std::unique_ptr<h5::File> f;
  {
    const h5::Lock lock;  // the failed open and its error stack are one step (h5.h)
    try {
      f = std::make_unique<h5::File>(meta, h5::File::readonly);
    } catch (const Error&) {
      meta_error(meta, "cannot be opened by HDF5 (" + h5::error_stack_text() + "): truncated or corrupt");
    }
  }
  if (!f->has_attr("format")) meta_error(meta, "has no 'format' attribute: not an rmoe dataset");
  const std::string format = read_fixed_string_attr(*f, "format", "dataset '" + meta + "'");
  if (format != kDatasetFormat)
    meta_error(meta, "has format '" + format + "', expected '" + kDatasetFormat + "'");
  if (!f->has_attr("version")) meta_error(meta, "has no 'version' attribute");
  const int64_t version = f->attr_int("version");
  if (version != kDatasetVersion)
    meta_error(meta, "has format version " + std::to_string(version) + "; this build reads version " +
                         std::to_string(kDatasetVersion));
  for (const char* a : {"tokenizer", "tokenizer_fingerprint", "vocab_size", "eod_id", "train_tokens", "val_tokens",
                        "train_shards", "val_shards"})
    if (!f->has_attr(a)) meta_error(meta, "has no '" + std::string(a) + "' attribute; recreate it with rmoe_prepare");
  return f;
}

std::vector<std::string> list_shards(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".h5") out.push_back(e.path().string());
  if (ec) throw InputError("cannot list '" + dir + "': " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

const char* split_name(Split s) { return s == Split::train ? "train" : "val"; }

void write_dataset_meta(const std::string& dir, const Tokenizer& tok, const DatasetSummary& s) {
  h5::File f((fs::path(dir) / kDatasetMetaFile).string(), h5::File::truncate_checksummed);
  const std::string blob = tok.serialize();
  if (!blob.empty()) {
    f.write<uint8_t>("/tokenizer_model", reinterpret_cast<const uint8_t*>(blob.data()), {int64_t(blob.size())});
    h5::set_attr_fixed_string(f, "description", "the serialized tokenizer model (for sentencepiece: the .model file)",
                              "/tokenizer_model");
  }
  // Strings fixed-length: in the checksummed object header, not HDF5's global heap (docs/DATA.md).
  h5::set_attr_fixed_string(f, "format", kDatasetFormat);
  f.set_attr("version", int64_t(kDatasetVersion));
  h5::set_attr_fixed_string(f, "tokenizer", tok.name());
  h5::set_attr_fixed_string(f, "tokenizer_fingerprint", tok.fingerprint());
  f.set_attr("vocab_size", int64_t(tok.vocab_size()));
  f.set_attr("eod_id", int64_t(tok.eod_id()));
  h5::set_attr_fixed_string(f, "token_dtype", token_bytes_for_vocab(tok.vocab_size()) == 2 ? "uint16" : "uint32");
  f.set_attr("documents", s.documents);
  f.set_attr("input_bytes", s.input_bytes);
  f.set_attr("train_tokens", s.train_tokens);
  f.set_attr("val_tokens", s.val_tokens);
  f.set_attr("train_shards", s.train_shards);
  f.set_attr("val_shards", s.val_shards);
  h5::set_attr_fixed_string(f, "created_by", s.created_by);
  h5::set_attr_fixed_string(f, "description",
                            "rmoe dataset: token shards in train/ and val/ (each document followed by eod_id), "
                            "tokenizer in /tokenizer_model (docs/DATA.md)");
  f.close();  // throws naming the file if HDF5 cannot write it all (a full disk)
}

bool is_dataset_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / kDatasetMetaFile, ec);
}

int dataset_vocab_size(const std::string& dir) { return int(open_meta(dir)->attr_int("vocab_size")); }

ShardDataset::ShardDataset(const std::string& dir) : dir_(dir) {
  const std::string meta = (fs::path(dir) / kDatasetMetaFile).string();
  {
    std::unique_ptr<h5::File> f = open_meta(dir);
    std::string blob;
    try {
      if (f->exists("/tokenizer_model")) {
        const auto bytes = f->read<uint8_t>("/tokenizer_model");
        blob.assign(bytes.begin(), bytes.end());
      }
    } catch (const Error& e) {
      meta_error(meta, std::string("has an unreadable /tokenizer_model: ") + e.what());
    }
    const std::string what = "dataset '" + meta + "'";
    tokenizer_ = load_tokenizer(read_fixed_string_attr(*f, "tokenizer", what), blob, what);
    const std::string fp = read_fixed_string_attr(*f, "tokenizer_fingerprint", what);
    if (fp != tokenizer_->fingerprint())
      meta_error(meta, "has a tokenizer whose fingerprint " + tokenizer_->fingerprint() +
                           " differs from the recorded " + fp + ": the tokenizer model is damaged");
    if (f->attr_int("vocab_size") != tokenizer_->vocab_size())
      meta_error(meta, "says vocab_size " + std::to_string(f->attr_int("vocab_size")) + " but its tokenizer has " +
                           std::to_string(tokenizer_->vocab_size()));
    summary_.documents = f->has_attr("documents") ? f->attr_int("documents") : -1;
    summary_.input_bytes = f->has_attr("input_bytes") ? f->attr_int("input_bytes") : -1;
    summary_.train_tokens = f->attr_int("train_tokens");
    summary_.val_tokens = f->attr_int("val_tokens");
    summary_.train_shards = f->attr_int("train_shards");
    summary_.val_shards = f->attr_int("val_shards");
    summary_.created_by = f->has_attr("created_by") ? read_fixed_string_attr(*f, "created_by", what) : "";
  }
  for (Split s : {Split::train, Split::val}) {
    SplitInfo& info = s == Split::train ? train_ : val_;
    const std::string sub = (fs::path(dir) / split_name(s)).string();
    const int64_t want_shards = s == Split::train ? summary_.train_shards : summary_.val_shards;
    const int64_t want_tokens = s == Split::train ? summary_.train_tokens : summary_.val_tokens;
    std::error_code ec;
    if (!fs::is_directory(sub, ec))
      throw InputError("dataset '" + dir + "' has no " + split_name(s) + "/ directory; recreate it with rmoe_prepare");
    const std::vector<std::string> paths = list_shards(sub);
    if (paths.empty())
      throw InputError("dataset '" + dir + "': the " + std::string(split_name(s)) + " split is empty (no shards in '" +
                       sub + "'); recreate it with rmoe_prepare");
    if (int64_t(paths.size()) != want_shards)
      throw InputError("dataset '" + dir + "': '" + sub + "' holds " + std::to_string(paths.size()) +
                       " shards but " + kDatasetMetaFile + " lists " + std::to_string(want_shards) +
                       " (a shard is missing or foreign); recreate it with rmoe_prepare");
    for (const std::string& p : paths) {
      ShardReader r(p);
      const ShardHeader& h = r.header();
      if (h.tokenizer != tokenizer_->name() || h.tokenizer_fingerprint != tokenizer_->fingerprint())
        throw InputError("shard '" + p + "' was written with tokenizer " + h.tokenizer + " (" +
                         h.tokenizer_fingerprint + "), not this dataset's " + tokenizer_->name() + " (" +
                         tokenizer_->fingerprint() + "); it belongs to another dataset");
      if (h.vocab_size != tokenizer_->vocab_size() || h.eod_id != tokenizer_->eod_id())
        throw InputError("shard '" + p + "' has vocab_size " + std::to_string(h.vocab_size) + " / eod_id " +
                         std::to_string(h.eod_id) + ", but the dataset's tokenizer has " +
                         std::to_string(tokenizer_->vocab_size()) + " / " + std::to_string(tokenizer_->eod_id()));
      if (h.token_count < 1) throw InputError("shard '" + p + "' holds no tokens; recreate the dataset");
      info.shards.push_back(h);
      info.tokens += h.token_count;
    }
    if (info.tokens != want_tokens)
      throw InputError("dataset '" + dir + "': the " + std::string(split_name(s)) + " shards hold " +
                       std::to_string(info.tokens) + " tokens but " + kDatasetMetaFile + " says " +
                       std::to_string(want_tokens) + "; recreate it with rmoe_prepare");
  }
}

std::string ShardDataset::describe() const {
  std::ostringstream os;
  os << dir_ << ": " << tokenizer_->describe() << ", train " << train_.tokens << " tokens in " << train_.shards.size()
     << " shard(s), val " << val_.tokens << " tokens in " << val_.shards.size() << " shard(s)";
  return os.str();
}

void ShardDataset::verify_all() const {
  std::vector<int32_t> buf(size_t(1) << 20);
  for (const SplitInfo* s : {&train_, &val_})
    for (const ShardHeader& h : s->shards) {
      ShardReader r(h.path);
      for (int64_t off = 0; off < h.token_count; off += int64_t(buf.size()))
        r.read(off, std::min<int64_t>(int64_t(buf.size()), h.token_count - off), buf.data());
    }
}

}  // namespace rmoe
