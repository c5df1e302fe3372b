// fuzz_tokenizer.cpp — libFuzzer entry point: a SentencePiece blob, a .model
// file or a dataset's dataset.h5, then encode/decode (targets.h run_tokenizer).
// Contract and corpus: tests/fuzz/README.md.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmoe::fuzz::check_contract([&] { rmoe::fuzz::run_tokenizer(data, size); });
  return 0;
}
