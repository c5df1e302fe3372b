// fuzz_checkpoint.cpp — libFuzzer entry point: one HDF5 checkpoint: header,
// stored configuration, load with and without the AdamW moments (targets.h
// run_checkpoint).
// Contract and corpus: tests/fuzz/README.md.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmoe::fuzz::check_contract([&] { rmoe::fuzz::run_checkpoint(data, size); });
  return 0;
}
