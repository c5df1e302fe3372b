// rmoe_prepare — turns text into a dataset directory of HDF5 token shards
// (docs/DATA.md). Thin main over data/prepare.h. Exit status: 0 done, 1
// failure, 2 bad usage or bad input (one line naming the option or file).
//
//   rmoe_prepare --input corpus/ --output data/corpus --tokenizer sentencepiece --vocab-size 8000
//   rmoe_prepare --input enwik8 --output data/enwik8 --tokenizer byte --val-tokens 5000000
//   cat *.txt | rmoe_prepare --input - --output data/x --tokenizer byte --split-blank-lines

#include <boost/program_options.hpp>
#include <cstdio>

#include "app_main.h"
#include "app_options.h"
#include "rmoe/core/error.h"
#include "rmoe/data/prepare.h"

using namespace rmoe;
namespace po = boost::program_options;

namespace {

int run(int argc, char** argv) {
  PrepareOptions o;
  po::options_description desc(
      "rmoe_prepare: text files, directories or standard input -> a dataset directory (train/ and val/ shards)\n"
      "Options");
  // clang-format off
  desc.add_options()
      ("help", "print this help and exit")
      ("input", po::value<std::vector<std::string>>(&o.inputs)->multitoken(),
       "text files and directories (walked recursively, sorted); - reads standard input. Each file is one document")
      ("output", po::value<std::string>(&o.output), "dataset directory to create")
      ("tokenizer", po::value<std::string>(&o.tokenizer)->default_value("byte"),
       "byte (vocabulary 256; NUL ends a document) | sentencepiece")
      ("vocab-size", po::value<int>(&o.vocab_size), "sentencepiece: vocabulary to train (default 8000)")
      ("model-type", po::value<std::string>(&o.model_type)->default_value("bpe"), "sentencepiece: bpe | unigram")
      ("tokenizer-model", po::value<std::string>(&o.tokenizer_model),
       "sentencepiece: use this .model file instead of training one")
      ("val-fraction", po::value<double>(&o.val_fraction)->default_value(0.01),
       "fraction of all tokens, taken from the end of the stream, for val/")
      ("val-tokens", po::value<int64_t>(&o.val_tokens), "exact number of val tokens (instead of --val-fraction)")
      ("shard-tokens", po::value<int64_t>(&o.shard_tokens)->default_value(100'000'000), "tokens per shard")
      ("split-blank-lines", po::bool_switch(&o.split_blank_lines),
       "a run of blank lines also ends a document (the blank lines are dropped)")
      ("overwrite", po::bool_switch(&o.overwrite), "replace an existing dataset in --output")
      ("seed", po::value<uint64_t>(&o.seed)->default_value(1234), "sentencepiece training's sampling seed")
      ("threads", po::value<int>(&o.threads)->default_value(0), "encoding threads (0 = all cores)")
      ("quiet", "no progress output");
  // clang-format on
  po::variables_map vm;
  if (!parse_or_usage(argc, argv, desc, vm)) return 0;  // --help
  if (vm.count("val-tokens") && !vm["val-fraction"].defaulted())
    throw UsageError("give --val-fraction or --val-tokens, not both");
  if (vm.count("val-tokens") && o.val_tokens < 1)
    throw UsageError("--val-tokens=" + std::to_string(o.val_tokens) + " must be >= 1");
  if (o.tokenizer == "byte" && !vm["model-type"].defaulted())
    throw UsageError("--model-type applies to --tokenizer sentencepiece only");
  if (vm.count("quiet")) o.progress = 0;
  for (int i = 0; i < argc; ++i) {
    if (i > 0) o.created_by += ' ';
    o.created_by += argv[i];
  }
  const PrepareReport rep = prepare_dataset(o);
  std::printf("%s", format_prepare_report(rep).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return rmoe::app_main("rmoe_prepare", argc, argv, run); }
