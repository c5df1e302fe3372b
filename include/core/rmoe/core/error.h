// error.h — rmoe::Error and RMOE_CHECK.
//
// Library code throws; mains catch, print one line and exit (under MPI, after
// aborting every rank). Messages name what failed, the input, and what to do.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace rmoe {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A bad user input (option, value, file). Mains exit with status 2 for these.
struct UsageError : Error {
  using Error::Error;
};

// A bad input file found while reading it (a dataset, shard or tokenizer
// model that is missing, damaged or of another format): exit status 2 like
// any UsageError, but under MPI only the rank that read the file may see it
// (another node, another copy of the file), so that rank prints it itself
// (src/apps/app_main.h). The data layer throws it for every problem of its
// input files.
struct InputError : UsageError {
  using UsageError::UsageError;
};

// Throws UsageError(msg): for validation code that reads as a list of rules.
[[noreturn]] void usage_fail(const std::string& msg);

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

}  // namespace rmoe

#define RMOE_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::ostringstream rmoe_os_;                                             \
      rmoe_os_ << __VA_ARGS__;                                                 \
      ::rmoe::throw_error(__FILE__, __LINE__,                                  \
                          std::string("check failed: " #cond ": ") +           \
                              rmoe_os_.str());                                 \
    }                                                                          \
  } while (0)
