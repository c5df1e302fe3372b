// app_options.h — command-line helpers shared by the apps (header-only: each
// app is one source file).
//
//   po::variables_map vm;
//   if (!parse_or_usage(argc, argv, desc, vm)) return 0;  // --help was printed
//
// For the apps that use a trained model (rmoe_eval, rmoe_generate): the
// checkpoint --load names, and their own flags split off the rmoe_train ones
// (which go to parse_train_config_from_ini, train/config.h):
//   const std::string path = checkpoint_to_load(load);  // UsageError if none
//   TrainConfig cfg = parse_train_config_from_ini(read_checkpoint_header(path).config_ini, path, overrides);
// and, once the data is open, that its tokenizer is the one the model was
// trained on (check_same_tokenizer; --allow-tokenizer-mismatch overrides).
// Tested through tests/cli/eval_generate.sh and tests/cli/quickstart.sh.
#pragma once
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"  // option_error_text

namespace rmoe {

// Parses argv against `desc` as every rmoe app does: long options only, no
// abbreviations ("--val" is not "--val-tokens"); a Boost error becomes a
// one-line UsageError ending "; run with --help for the options" (its text
// from option_error_text, train/config.h: Boost's own what() can loop forever
// on a value such as "%value%"). When
// --help (an option of desc) is given, prints desc on stdout and returns
// false: the caller exits with status 0.
inline bool parse_or_usage(int argc, char** argv, const boost::program_options::options_description& desc,
                           boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  try {
    const int style = po::command_line_style::unix_style & ~po::command_line_style::allow_guessing;
    po::store(po::command_line_parser(argc, argv).options(desc).style(style).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(option_error_text(e) + "; run with --help for the options");
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  return true;
}

// The checkpoint file --load=LOAD names: a file as is, a directory's newest
// checkpoint. Throws UsageError (one line) when there is none.
inline std::string checkpoint_to_load(const std::string& load) {
  if (load.empty()) throw UsageError("--load is required: a checkpoint file or a --save directory of rmoe_train");
  if (!std::filesystem::exists(load))
    throw UsageError("--load=" + load + ": no such file or directory; give a checkpoint (ckpt_<step>.h5) or the --save directory of a training run");
  const std::string path = resolve_load_path(load);
  if (path.empty())
    throw UsageError("--load=" + load + ": the directory holds no checkpoint (ckpt_<step>.h5); train with rmoe_train --save " + load + " first");
  return path;
}

// Splits "--name=value" / "--name value" off argv for the options in `own`
// (each taking one value); returns the remaining arguments (after argv[0]).
// A flag of `own` given twice, or without a value, is a UsageError.
inline std::vector<std::string> take_own_options(int argc, char** argv, const std::vector<std::string>& own,
                                                 std::vector<std::pair<std::string, std::string>>& found) {
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    bool mine = false;
    for (const std::string& name : own) {
      const std::string flag = "--" + name;
      if (a == flag || a.rfind(flag + "=", 0) == 0) {
        std::string value;
        if (a == flag) {
          if (i + 1 >= argc) throw UsageError(flag + " needs a value");
          value = argv[++i];
        } else {
          value = a.substr(flag.size() + 1);
        }
        for (const auto& f : found)
          if (f.first == name) throw UsageError(flag + " is given twice");
        found.emplace_back(name, value);
        mine = true;
        break;
      }
    }
    if (!mine) rest.push_back(a);
  }
  return rest;
}

// Removes every `--flag` (a switch without a value) from argv; returns
// whether it was there. argc and argv are updated in place.
inline bool take_switch(int& argc, char** argv, const std::string& flag) {
  bool found = false;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (flag == argv[i]) {
      found = true;
      continue;
    }
    argv[out++] = argv[i];
  }
  argc = out;
  return found;
}

// The tokenizer of the data an app reads (fingerprint and words, checkpoint.h
// tokenizer_fingerprint_of) against the one the checkpoint's model was
// trained on: a mismatch is a UsageError naming both, unless `allow`
// (--allow-tokenizer-mismatch), which only warns. A checkpoint written before
// tokenizer fingerprints gets a one-line warning. Warnings go to stderr when
// `print`.
inline void check_same_tokenizer(const CheckpointHeader& h, const std::string& checkpoint, const std::string& data,
                                 const std::string& fingerprint, const std::string& description, bool allow,
                                 bool print) {
  if (h.tokenizer_fingerprint.empty()) {
    if (print)
      std::fprintf(stderr,
                   "warning: %s records no tokenizer fingerprint (written by an older rmoe): cannot check that %s "
                   "(%s) uses the tokenizer it was trained on\n",
                   checkpoint.c_str(), data.c_str(), description.c_str());
    return;
  }
  if (h.tokenizer_fingerprint == fingerprint) return;
  const std::string what = "the tokenizer of " + data + ", " + description + " [" + fingerprint +
                           "], is not the one " + checkpoint + " was trained on, " + h.tokenizer + " [" +
                           h.tokenizer_fingerprint + "]";
  if (!allow)
    throw UsageError(what + "; use data prepared with the model's tokenizer, or pass --allow-tokenizer-mismatch");
  if (print) std::fprintf(stderr, "warning: --allow-tokenizer-mismatch: %s\n", what.c_str());
}

// True if `args` sets --name (either form).
inline bool has_option(const std::vector<std::string>& args, const std::string& name) {
  const std::string flag = "--" + name;
  for (const auto& a : args)
    if (a == flag || a.rfind(flag + "=", 0) == 0) return true;
  return false;
}

}  // namespace rmoe
