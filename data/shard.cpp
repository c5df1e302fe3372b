// shard.cpp — HDF5 token shards (see shard.h).
#include "rmoe/data/shard.h"

#include <algorithm>
#include <filesystem>

#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"

namespace rmoe {

namespace {

[[noreturn]] void shard_error(const std::string& path, const std::string& problem) {
  throw InputError("shard '" + path + "' " + problem);
}

constexpr const char* kRecreate = "; recreate the dataset with rmoe_prepare";
constexpr const char* kOldIndex =
    " is stored without checksummed chunks and chunk index, as older rmoe_prepare builds wrote shards (damage "
    "could hang HDF5 or make it allocate gigabytes, docs/DATA.md); re-run rmoe_prepare to write the dataset again";

}  // namespace

std::string read_fixed_string_attr(const h5::File& f, const std::string& name, const std::string& what,
                                   const std::string& obj) {
  if (h5::attr_is_variable_length_string(f, name, obj))
    throw InputError(what + " stores attribute '" + name +
                     "' as a variable-length string: it was written by an older rmoe_prepare, whose files can "
                     "hang HDF5 when damaged (docs/DATA.md); re-run rmoe_prepare to write the dataset again");
  return f.attr_string(name, obj);
}

int token_bytes_for_vocab(int vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// ---- writer ---------------------------------------------------------------------

ShardWriter::ShardWriter(const std::string& path, const Tokenizer& tok, int64_t chunk_tokens)
    : path_(path),
      vocab_size_(tok.vocab_size()),
      eod_id_(tok.eod_id()),
      token_bytes_(token_bytes_for_vocab(tok.vocab_size())),
      tokenizer_(tok.name()),
      fingerprint_(tok.fingerprint()),
      flush_tokens_(chunk_tokens * 16) {
  file_ = std::make_unique<h5::File>(path, h5::File::truncate_checksummed);
  h5::use_checksummed_chunk_indexes(*file_);  // the chunk index of /tokens carries checksums too (docs/DATA.md)
  if (token_bytes_ == 2)
    file_->create_growable_1d<uint16_t>("/tokens", chunk_tokens, /*fletcher32=*/true);
  else
    file_->create_growable_1d<uint32_t>("/tokens", chunk_tokens, /*fletcher32=*/true);
  if (token_bytes_ == 2)
    buf16_.resize(size_t(flush_tokens_));
  else
    buf32_.resize(size_t(flush_tokens_));
}

ShardWriter::~ShardWriter() = default;

void ShardWriter::append(const int32_t* ids, int64_t n) {
  RMOE_CHECK(file_, "ShardWriter::append after finish() on '" << path_ << "'");
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size_)
      throw UsageError("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                       std::to_string(vocab_size_) + ") of tokenizer " + tokenizer_ + " (writing '" + path_ + "')");
    if (token_bytes_ == 2)
      buf16_[buffered_] = uint16_t(id);
    else
      buf32_[buffered_] = uint32_t(id);
    if (++buffered_ == size_t(flush_tokens_)) flush();
  }
}

void ShardWriter::flush() {
  if (buffered_ == 0) return;
  if (token_bytes_ == 2)
    file_->append_1d<uint16_t>("/tokens", buf16_.data(), int64_t(buffered_));
  else
    file_->append_1d<uint32_t>("/tokens", buf32_.data(), int64_t(buffered_));
  written_ += int64_t(buffered_);
  buffered_ = 0;
}

void ShardWriter::finish(const std::vector<int64_t>& doc_offsets) {
  RMOE_CHECK(file_, "ShardWriter::finish called twice on '" << path_ << "'");
  flush();
  if (!doc_offsets.empty()) {  // chunked with Fletcher32 like /tokens: every byte read is checked
    const int64_t n = int64_t(doc_offsets.size());
    file_->create_growable_1d<int64_t>("/doc_offsets", std::min<int64_t>(n, kShardChunkTokens), /*fletcher32=*/true);
    file_->append_1d<int64_t>("/doc_offsets", doc_offsets.data(), n);
    h5::set_attr_fixed_string(*file_, "description", "positions in /tokens where documents start", "/doc_offsets");
  }
  // Strings fixed-length: in the checksummed object header, not HDF5's global heap (docs/DATA.md).
  h5::File& f = *file_;
  h5::set_attr_fixed_string(f, "format", kShardFormat);
  f.set_attr("version", int64_t(kShardVersion));
  f.set_attr("vocab_size", int64_t(vocab_size_));
  f.set_attr("eod_id", int64_t(eod_id_));
  h5::set_attr_fixed_string(f, "tokenizer", tokenizer_);
  h5::set_attr_fixed_string(f, "tokenizer_fingerprint", fingerprint_);
  f.set_attr("token_count", written_);
  h5::set_attr_fixed_string(f, "description",
                            "rmoe token shard: /tokens holds token ids in document order, each document "
                            "followed by eod_id; the tokenizer is in ../dataset.h5 (docs/DATA.md)");
  h5::set_attr_fixed_string(f, "description",
                            std::string("token ids (") + (token_bytes_ == 2 ? "uint16" : "uint32") +
                                "), chunked, Fletcher32 checksums",
                            "/tokens");
  file_->close();  // throws naming the file if HDF5 cannot write it all (a full disk)
  file_.reset();
}

// ---- reader ---------------------------------------------------------------------

ShardReader::ShardReader(const std::string& path) {
  header_.path = path;
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) shard_error(path, "does not exist" + std::string(kRecreate));
  if (!fs::is_regular_file(path, ec)) shard_error(path, "is not a regular file");
  if (!h5::is_hdf5_file(path))
    shard_error(path, "is not an HDF5 file (or cannot be read)" + std::string(kRecreate));
  {
    const h5::Lock lock;  // the failed open and its error stack are one step (h5.h)
    try {
      file_ = std::make_unique<h5::File>(path, h5::File::readonly);
    } catch (const Error&) {
      const std::string why = h5::error_stack_text();
      shard_error(path, "cannot be opened by HDF5 (" + (why.empty() ? std::string("unknown reason") : why) +
                            "): the file is truncated or corrupt" + kRecreate);
    }
  }
  const h5::File& f = *file_;
  try {
    if (!f.has_attr("format"))
      shard_error(path, "has no 'format' attribute: not an rmoe token shard (expected format '" +
                            std::string(kShardFormat) + "')");
    const std::string format = read_fixed_string_attr(f, "format", "shard '" + path + "'");
    if (format != kShardFormat)
      shard_error(path, "has format '" + format + "', expected '" + kShardFormat + "': not an rmoe token shard");
    if (!f.has_attr("version")) shard_error(path, "has no 'version' attribute" + std::string(kRecreate));
    const int64_t version = f.attr_int("version");
    if (version != kShardVersion)
      shard_error(path, "has format version " + std::to_string(version) + "; this build reads version " +
                            std::to_string(kShardVersion) + kRecreate + " (or use a matching rmoe)");
    for (const char* a : {"vocab_size", "eod_id", "tokenizer", "tokenizer_fingerprint", "token_count"})
      if (!f.has_attr(a)) shard_error(path, "has no '" + std::string(a) + "' attribute" + kRecreate);
    const int64_t vocab = f.attr_int("vocab_size");
    if (vocab < 2 || vocab > (int64_t(1) << 31) - 1)
      shard_error(path, "has vocab_size " + std::to_string(vocab) + ", which is not a valid vocabulary size");
    header_.vocab_size = int(vocab);
    header_.eod_id = int(f.attr_int("eod_id"));
    header_.tokenizer = read_fixed_string_attr(f, "tokenizer", "shard '" + path + "'");
    header_.tokenizer_fingerprint = read_fixed_string_attr(f, "tokenizer_fingerprint", "shard '" + path + "'");
    header_.token_count = f.attr_int("token_count");
    if (!f.exists("/tokens")) shard_error(path, "has no /tokens dataset" + std::string(kRecreate));
    const h5::File::DatasetInfo info = f.info("/tokens");
    if (info.shape.size() != 1)
      shard_error(path, "/tokens is " + std::to_string(info.shape.size()) + "-D; expected 1-D");
    if (!info.is_integer || info.is_signed || (info.element_bytes != 2 && info.element_bytes != 4))
      shard_error(path, "/tokens has element type of " + std::to_string(info.element_bytes) +
                            " bytes (integer: " + (info.is_integer ? "yes" : "no") +
                            "); expected uint16 or uint32");
    header_.token_bytes = int(info.element_bytes);
    if (header_.token_bytes < token_bytes_for_vocab(header_.vocab_size))
      shard_error(path, "stores ids as uint16 but its vocab_size " + std::to_string(vocab) + " needs uint32");
    if (info.shape[0] != header_.token_count)
      shard_error(path, "/tokens holds " + std::to_string(info.shape[0]) + " tokens but attribute token_count says " +
                            std::to_string(header_.token_count) + kRecreate);
    if (info.chunk <= 0 || !info.fletcher32)
      shard_error(path, "/tokens is not chunked with Fletcher32 checksums (damage could go unnoticed)" +
                            std::string(kRecreate));
    if (!info.checksummed_chunk_index) shard_error(path, "/tokens" + std::string(kOldIndex));
    if (f.exists("/doc_offsets")) {
      const h5::File::DatasetInfo docs = f.info("/doc_offsets");
      if (docs.shape.size() != 1) shard_error(path, "/doc_offsets is not 1-D");
      if (docs.shape[0] > 0 && (!docs.fletcher32 || !docs.checksummed_chunk_index))
        shard_error(path, "/doc_offsets" + std::string(kOldIndex));
      header_.num_documents = docs.shape[0];
    }
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    shard_error(path, std::string("has a damaged header: ") + e.what() + kRecreate);
  }
}

ShardReader::~ShardReader() = default;

void ShardReader::read(int64_t offset, int64_t n, int32_t* out) const {
  if (offset < 0 || n < 0 || offset + n > header_.token_count)
    shard_error(header_.path, "read of tokens [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                                  ") is past its end (" + std::to_string(header_.token_count) + " tokens)");
  try {
    file_->read_1d<int32_t>("/tokens", offset, n, out);
  } catch (const Error& e) {
    shard_error(header_.path, std::string("is corrupt: ") + e.what() + kRecreate);
  }
  for (int64_t i = 0; i < n; ++i)
    if (out[i] < 0 || out[i] >= header_.vocab_size)
      shard_error(header_.path, "holds token id " + std::to_string(out[i]) + " at position " +
                                    std::to_string(offset + i) + ", outside its vocabulary [0, " +
                                    std::to_string(header_.vocab_size) + ")" + kRecreate);
}

std::vector<int64_t> ShardReader::doc_offsets() const {
  if (header_.num_documents < 0) return {};
  try {
    return file_->read<int64_t>("/doc_offsets");
  } catch (const Error& e) {
    shard_error(header_.path, std::string("has unreadable /doc_offsets: ") + e.what());
  }
}

}  // namespace rmoe
