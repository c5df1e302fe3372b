// error.cpp — formats and throws rmoe::Error with its source location.
#include "rmoe/core/error.h"

namespace rmoe {

void throw_error(const char* file, int line, const std::string& msg) {
  std::string f(file);
  auto slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  throw Error(msg + " (" + f + ":" + std::to_string(line) + ")");
}

void usage_fail(const std::string& msg) { throw UsageError(msg); }

}  // namespace rmoe
