// tokenizer.h — text <-> token ids, and the blob that carries a tokenizer
// inside a dataset (docs/DATA.md).
//
// Two tokenizers:
//   byte           one token per byte: vocabulary 256, as in the usual
//                  character-level setups (enwik8) and configs/medium_char_*.
//                  The NUL byte (id 0) is the end-of-document token, so text
//                  to encode must not contain NUL (encode throws; rmoe_prepare
//                  names the file and offset). Every other byte string, any
//                  encoding or invalid UTF-8 included, round-trips exactly.
//                  Evaluation on byte data reports bits per character =
//                  loss / ln 2 (the end-of-document token counts as one
//                  character, one per document: it does not move BPC).
//   sentencepiece  a SentencePiece BPE or unigram model (Debian's
//                  libsentencepiece), trained on the input by rmoe_prepare or
//                  loaded from a .model file. End of document = the model's
//                  </s> (eos) id. Models trained here use identity
//                  normalisation, no dummy prefix, kept whitespace and byte
//                  fallback, so decode(encode(text)) == text for any UTF-8
//                  text. A loaded model keeps its own normalisation (e.g.
//                  NFKC), which may change the text.
//
// serialize() gives the bytes that recreate the tokenizer with
// load_tokenizer(name(), blob): empty for byte, the model proto otherwise.
// fingerprint() names those bytes (FNV-1a, hex) so shards from another
// tokenizer are recognised. encode/decode are const and thread-safe.
//
// Tested by tests/test_data.cpp (round trips, training, loading).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rmoe {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;  // "byte" or "sentencepiece"
  virtual int vocab_size() const = 0;    // ids are in [0, vocab_size)
  virtual int eod_id() const = 0;        // end-of-document token
  // Appends the ids of `text` to out (no end-of-document token).
  virtual void encode(std::string_view text, std::vector<int32_t>& out) const = 0;
  // The text of ids[0, n); each end-of-document token becomes `eod_text`.
  // Throws UsageError for an id outside [0, vocab_size).
  virtual std::string decode(const int32_t* ids, int64_t n, std::string_view eod_text = "") const = 0;
  virtual std::string serialize() const = 0;
  std::string fingerprint() const;  // 16 hex digits of FNV-1a over name + serialize()
  std::string describe() const;     // e.g. "sentencepiece (vocabulary 8000, end-of-document id 2)"
};

std::unique_ptr<Tokenizer> make_byte_tokenizer();

// Recreates a tokenizer from name() and serialize(). Throws InputError naming
// `where` (the file it came from) for an unknown name or a bad blob.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& name, const std::string& blob,
                                          const std::string& where);

// Loads a SentencePiece .model file. Throws InputError naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece_model_file(const std::string& path);

struct SentencePieceTrainOptions {
  int vocab_size = 8000;
  std::string model_type = "bpe";      // bpe | unigram
  int64_t max_sentences = 2'000'000;   // sentences sampled for training (memory bound)
  int num_threads = 2;
  uint64_t seed = 1234;
};

// Trains a SentencePiece model on the sentences that `next_sentence` yields
// (it fills its argument and returns true, or returns false at the end).
// Throws UsageError (e.g. a --vocab-size the text cannot support) with
// SentencePiece's reason.
std::unique_ptr<Tokenizer> train_sentencepiece(const std::function<bool(std::string&)>& next_sentence,
                                               const SentencePieceTrainOptions& opts);

}  // namespace rmoe
