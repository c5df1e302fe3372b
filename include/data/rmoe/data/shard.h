// shard.h — one HDF5 token shard: writer and validating reader
// (docs/DATA.md).
//
// A shard file (written in the HDF5 1.8+ format, whose metadata carries
// checksums):
//   /tokens        1-D token ids, uint16 when the vocabulary fits (<= 65536),
//                  else uint32; chunked by kShardChunkTokens with the
//                  Fletcher32 filter, so HDF5 checks every chunk it reads
//   /doc_offsets   1-D int64 (optional): positions in /tokens where documents
//                  start, ascending
//   attributes on "/": format = "rmoe-tokens", version = 1, vocab_size,
//                  eod_id, tokenizer (name), tokenizer_fingerprint,
//                  token_count, description; strings fixed-length (in the
//                  checksummed object header), and the chunk index of
//                  /tokens in the HDF5 1.10 format (checksummed as well)
//
// Every problem found by ShardReader throws InputError (a UsageError, error.h)
// whose message starts with "shard '<path>'" and says what is wrong and what
// to do.
//
// Threads: readers and writers may be used from several threads (the loader's
// prefetch threads share readers). Their HDF5 calls go through core/h5, which
// holds one process-wide lock inside HDF5 (h5.h), so concurrent reads of one
// or many shards are serialised there whether or not libhdf5 was built
// thread-safe; only the id checks and copies run in parallel.
// Tested by tests/test_data.cpp (round trip, each kind of damage).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rmoe/data/tokenizer.h"

namespace rmoe {

namespace h5 {
class File;
}

inline constexpr const char* kShardFormat = "rmoe-tokens";
inline constexpr int kShardVersion = 1;
inline constexpr int64_t kShardChunkTokens = 32768;  // 64 KiB (uint16) per chunk: one window touches <= 2

// What a shard's attributes and layout say, after validation.
struct ShardHeader {
  std::string path;
  int64_t token_count = 0;
  int vocab_size = 0;
  int eod_id = -1;
  std::string tokenizer;              // tokenizer name
  std::string tokenizer_fingerprint;  // Tokenizer::fingerprint()
  int token_bytes = 0;                // 2 (uint16) or 4 (uint32)
  int64_t num_documents = -1;         // length of /doc_offsets; -1 when absent
};

// Storage width of token ids for a vocabulary: 2 if it fits uint16, else 4.
int token_bytes_for_vocab(int vocab_size);

// The string attribute `name` of a shard or dataset.h5 (`what` names the file
// in messages: "shard 'P'"). Only fixed-length strings are read: a
// variable-length one (the files of older rmoe_prepare builds) throws
// InputError saying to re-run rmoe_prepare, without touching HDF5's global
// heap, where such strings live unchecked and a damaged heap can hang HDF5
// (finding F1, tests/fuzz/README.md).
std::string read_fixed_string_attr(const h5::File& f, const std::string& name, const std::string& what,
                                   const std::string& obj = "/");

class ShardWriter {
 public:
  // Creates (truncates) `path` for ids of `tok`.
  ShardWriter(const std::string& path, const Tokenizer& tok, int64_t chunk_tokens = kShardChunkTokens);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  // Appends ids; throws UsageError for an id outside [0, vocab_size).
  void append(const int32_t* ids, int64_t n);
  int64_t size() const { return written_ + int64_t(buffered_); }
  // Writes the buffered tokens, /doc_offsets (skipped when empty) and the
  // attributes, then closes the file; throws naming the file when any of it
  // cannot be written (a full disk). Nothing may be appended afterwards.
  void finish(const std::vector<int64_t>& doc_offsets);
  const std::string& path() const { return path_; }

 private:
  void flush();
  std::string path_;
  std::unique_ptr<h5::File> file_;
  int vocab_size_, eod_id_, token_bytes_;
  std::string tokenizer_, fingerprint_;
  std::vector<uint16_t> buf16_;
  std::vector<uint32_t> buf32_;
  size_t buffered_ = 0;
  int64_t written_ = 0;
  int64_t flush_tokens_;
};

class ShardReader {
 public:
  // Opens `path` and validates its format, version, attributes and layout.
  explicit ShardReader(const std::string& path);
  ~ShardReader();
  const ShardHeader& header() const { return header_; }
  // Tokens [offset, offset + n) into out (HDF5 verifies the checksums of the
  // chunks read); throws InputError naming the file for a checksum failure,
  // an id outside the vocabulary or a range past the end. May be called
  // from several threads at once (see the file comment).
  void read(int64_t offset, int64_t n, int32_t* out) const;
  std::vector<int64_t> doc_offsets() const;  // empty when absent

 private:
  ShardHeader header_;
  std::unique_ptr<h5::File> file_;
};

}  // namespace rmoe
