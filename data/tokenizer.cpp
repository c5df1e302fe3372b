// tokenizer.cpp — the byte and SentencePiece tokenizers (see tokenizer.h).
#include "rmoe/data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "rmoe/core/error.h"
#include "rmoe/core/rng.h"

namespace rmoe {

namespace {

[[noreturn]] void bad_id(int64_t id, int vocab, int64_t pos) {
  throw UsageError("token id " + std::to_string(id) + " at position " + std::to_string(pos) +
                   " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
}

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  int vocab_size() const override { return 256; }
  int eod_id() const override { return 0; }
  void encode(std::string_view text, std::vector<int32_t>& out) const override {
    const size_t start = out.size();
    out.resize(start + text.size());
    for (size_t i = 0; i < text.size(); ++i) {
      const int32_t b = static_cast<unsigned char>(text[i]);
      if (b == 0) {
        out.resize(start);
        throw UsageError("the text has a NUL byte at offset " + std::to_string(i) +
                         "; the byte tokenizer reserves NUL as its end-of-document token");
      }
      out[start + i] = b;
    }
  }
  std::string decode(const int32_t* ids, int64_t n, std::string_view eod_text) const override {
    std::string s;
    s.reserve(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] == 0)
        s += eod_text;
      else if (ids[i] > 0 && ids[i] < 256)
        s += char(ids[i]);
      else
        bad_id(ids[i], 256, i);
    }
    return s;
  }
  std::string serialize() const override { return ""; }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // `where` names the blob's origin for error messages.
  SentencePieceTokenizer(std::string proto, const std::string& where) : proto_(std::move(proto)) {
    // SentencePiece reports most bad models by status, but its trie builder
    // (darts-clone) throws its own std::exception on some, e.g. a piece that
    // starts with a NUL byte (fuzz finding F5, tests/fuzz/README.md).
    sentencepiece::util::Status st;
    try {
      st = sp_.LoadFromSerializedProto(proto_);
    } catch (const std::exception& e) {
      throw InputError(where + ": not a valid SentencePiece model (" + e.what() + ")");
    }
    if (!st.ok())
      throw InputError(where + ": not a valid SentencePiece model (" + st.ToString() + ")");
    vocab_ = sp_.GetPieceSize();
    eod_ = sp_.eos_id();
    if (vocab_ < 2) throw InputError(where + ": SentencePiece model has only " + std::to_string(vocab_) + " pieces");
    if (eod_ < 0 || eod_ >= vocab_)
      throw InputError(where + ": SentencePiece model has no </s> (eos) piece, which rmoe uses as the "
                               "end-of-document token; train it with eos_id >= 0");
  }
  std::string name() const override { return "sentencepiece"; }
  int vocab_size() const override { return vocab_; }
  int eod_id() const override { return eod_; }
  void encode(std::string_view text, std::vector<int32_t>& out) const override {
    std::vector<int> ids;
    sentencepiece::util::Status st;
    try {
      st = sp_.Encode(text, &ids);
    } catch (const std::exception& e) {
      throw Error(std::string("SentencePiece encoding failed: ") + e.what());
    }
    if (!st.ok()) throw Error("SentencePiece encoding failed: " + st.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
  }
  std::string decode(const int32_t* ids, int64_t n, std::string_view eod_text) const override {
    std::string s;
    std::vector<int> piece;
    auto flush = [&] {
      if (piece.empty()) return;
      std::string part;
      sentencepiece::util::Status st;
      try {
        st = sp_.Decode(piece, &part);
      } catch (const std::exception& e) {
        throw Error(std::string("SentencePiece decoding failed: ") + e.what());
      }
      if (!st.ok()) throw Error("SentencePiece decoding failed: " + st.ToString());
      s += part;
      piece.clear();
    };
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_) bad_id(ids[i], vocab_, i);
      if (ids[i] == eod_) {
        flush();
        s += eod_text;
      } else {
        piece.push_back(ids[i]);
      }
    }
    flush();
    return s;
  }
  std::string serialize() const override { return proto_; }

 private:
  std::string proto_;
  sentencepiece::SentencePieceProcessor sp_;
  int vocab_ = 0, eod_ = -1;
};

class FunctionSentenceIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit FunctionSentenceIterator(const std::function<bool(std::string&)>& next) : next_(next) { Next(); }
  bool done() const override { return done_; }
  void Next() override { done_ = !next_(value_); }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::function<bool(std::string&)>& next_;
  std::string value_;
  bool done_ = false;
};

}  // namespace

std::string Tokenizer::fingerprint() const {
  const uint64_t h = hash_name(name() + '\0' + serialize());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string Tokenizer::describe() const {
  return name() + " (vocabulary " + std::to_string(vocab_size()) + ", end-of-document id " +
         std::to_string(eod_id()) + ")";
}

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& name, const std::string& blob, const std::string& where) {
  if (name == "byte") return make_byte_tokenizer();
  if (name == "sentencepiece") return std::make_unique<SentencePieceTokenizer>(blob, where);
  throw InputError(where + ": unknown tokenizer '" + name + "' (known: byte, sentencepiece)");
}

std::unique_ptr<Tokenizer> load_sentencepiece_model_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("--tokenizer-model=" + path + ": cannot open the file; check the path");
  std::ostringstream os;
  os << in.rdbuf();
  return std::make_unique<SentencePieceTokenizer>(os.str(), "--tokenizer-model=" + path);
}

std::unique_ptr<Tokenizer> train_sentencepiece(const std::function<bool(std::string&)>& next_sentence,
                                               const SentencePieceTrainOptions& opts) {
  if (opts.model_type != "bpe" && opts.model_type != "unigram")
    throw UsageError("--model-type=" + opts.model_type + ": allowed: bpe, unigram");
  if (opts.vocab_size < 300)
    throw UsageError("--vocab-size=" + std::to_string(opts.vocab_size) +
                     " must be >= 300 for sentencepiece (256 byte-fallback pieces plus specials and text pieces)");
  // Exact round trips: no normalisation, no dummy prefix, whitespace kept,
  // bytes for anything outside the learned pieces.
  const std::unordered_map<std::string, std::string> kwargs = {
      {"model_type", opts.model_type},
      {"vocab_size", std::to_string(opts.vocab_size)},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"character_coverage", "0.9995"},
      {"input_sentence_size", std::to_string(opts.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(opts.num_threads)},
      {"minloglevel", "2"},
  };
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned>(opts.seed));
  FunctionSentenceIterator it(next_sentence);
  std::string proto;
  const auto st = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, &proto);
  if (!st.ok())
    throw UsageError("sentencepiece training (--vocab-size=" + std::to_string(opts.vocab_size) + ", --model-type=" +
                     opts.model_type + ") failed: " + st.ToString());
  return std::make_unique<SentencePieceTokenizer>(std::move(proto), "trained sentencepiece model");
}

}  // namespace rmoe
