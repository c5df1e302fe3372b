// fuzz_shard.cpp — libFuzzer entry point: one HDF5 token shard opened and read
// by ShardReader (targets.h run_shard).
// Contract and corpus: tests/fuzz/README.md.
#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmoe::fuzz::check_contract([&] { rmoe::fuzz::run_shard(data, size); });
  return 0;
}
