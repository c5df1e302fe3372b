// prepare.h — text in, dataset directory out: the work behind rmoe_prepare
// (docs/DATA.md). Kept in the library so tests and benchmarks run it
// in-process; src/apps/rmoe_prepare.cpp is its command line.
//
// Documents: every input file is one document, standard input ("-") is one
// document; with split_blank_lines, a run of blank (whitespace-only) lines
// also ends a document and is dropped. Directories are walked recursively in
// sorted order (names starting with '.' are skipped). Each document's tokens
// are followed by the tokenizer's end-of-document id.
//
// Split: the token stream's last val tokens (val_tokens, or val_fraction of
// all tokens, at least 1) form val/, the rest train/, so a single large
// document (enwik8) splits like the usual head/tail split. Each split is cut
// into shards of shard_tokens (the last one takes the remainder, between 1/2
// and 3/2 of shard_tokens unless the split is smaller).
//
// Safety: everything is written under "<output>.tmp-<pid>" and renamed into
// place at the end; on any error that directory is removed and an existing
// output is untouched. An existing dataset is replaced only with overwrite;
// a non-empty directory that is not a dataset never is.
//
// Memory: bounded by the encoding batch (a few MiB), one shard writer's
// buffer and 8 bytes per document (document offsets); SentencePiece training
// samples at most max_sentences sentences.
//
// Pieces, each tested alone: text_input.h (input files, UTF-8 checks, the
// line reader), staging.h (the temporary directory and the replace);
// data/prepare.cpp holds the steps (tokenizer, parallel encoding into staging
// shards, split) and data/progress.h the progress bar.
//
// Tested by tests/test_data.cpp; measured by bench/bench_loader.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rmoe/data/dataset.h"

namespace rmoe {

struct PrepareOptions {
  std::vector<std::string> inputs;     // files, directories, "-" for standard input
  std::string output;                  // dataset directory to create
  std::string tokenizer = "byte";      // byte | sentencepiece
  int vocab_size = 0;                  // sentencepiece training; 0 = 8000
  std::string model_type = "bpe";      // sentencepiece training: bpe | unigram
  std::string tokenizer_model;         // sentencepiece: load this .model instead of training
  double val_fraction = 0.01;          // used when val_tokens == 0
  int64_t val_tokens = 0;
  int64_t shard_tokens = 100'000'000;
  bool split_blank_lines = false;
  bool overwrite = false;
  uint64_t seed = 1234;                // sentencepiece training's sampling
  int threads = 0;                     // encoding threads; 0 = all cores
  int64_t max_sentences = 2'000'000;   // sentencepiece training sample
  int progress = -1;                   // progress on stderr: -1 auto (long inputs), 0 never, 1 always
  std::string created_by;              // recorded in dataset.h5 (the command line)
};

struct PrepareReport {
  DatasetSummary summary;
  std::string output;
  std::string tokenizer;            // Tokenizer::describe()
  int64_t input_files = 0;
  int64_t output_bytes = 0;
  double seconds = 0;               // total wall time
  double tokenizer_train_seconds = 0;
};

// Throws UsageError for bad options and bad input (naming the option or the
// file and what is wrong), Error for I/O failures; never leaves a partial
// dataset behind.
PrepareReport prepare_dataset(const PrepareOptions& opts);

// The summary rmoe_prepare prints (several lines).
std::string format_prepare_report(const PrepareReport& r);

}  // namespace rmoe
