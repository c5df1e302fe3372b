// fuzz_config.cpp — libFuzzer entry point: the training configuration: an INI
// file for --config, optionally followed by command-line arguments (targets.h
// run_config).
// Contract and corpus: tests/fuzz/README.md.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmoe::fuzz::check_contract([&] { rmoe::fuzz::run_config(data, size); });
  return 0;
}
