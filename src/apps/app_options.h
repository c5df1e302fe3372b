// app_options.h — command-line helpers shared by the apps (header-only: each
// app is one source file).
//
//   po::variables_map vm;
//   if (!parse_or_usage(argc, argv, desc, vm)) return 0;  // --help was printed
#pragma once
#include <boost/program_options.hpp>
#include <iostream>
#include <string>

#include "rmoe/core/error.h"

namespace rmoe {

// Parses argv against `desc` as every rmoe app does: long options only, no
// abbreviations ("--val" is not "--val-tokens"); a Boost error becomes a
// one-line UsageError ending "; run with --help for the options". When
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
    throw UsageError(std::string(e.what()) + "; run with --help for the options");
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  return true;
}

}  // namespace rmoe
