// test_util.h — helpers the single-process test suites share (tests/test_*.cpp).
#pragma once
#include <gtest/gtest.h>

#include <exception>
#include <string>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/train/config.h"

namespace rmoe::testutil {

// parse_train_config of "rmoe_train" followed by `args`.
inline TrainConfig parse_args(std::vector<std::string> args) {
  args.insert(args.begin(), "rmoe_train");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return parse_train_config(static_cast<int>(argv.size()), argv.data());
}

// Runs body(), which must throw an E (rmoe::Error or one of its kinds) whose
// message contains every string of `parts`; another exception, or none, is a
// test failure. `context` goes into the failure messages. Returns the message
// ("" if none was thrown).
template <class E = Error, class F>
std::string expect_error(F&& body, const std::vector<std::string>& parts, const std::string& context = "") {
  try {
    body();
    ADD_FAILURE() << "no error; expected one mentioning: " << (parts.empty() ? "" : parts.front()) << " " << context;
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << context << "\nmessage: " << msg << "\nmissing: " << p;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong kind of exception " << context << ": " << e.what();
  }
  return "";
}

}  // namespace rmoe::testutil
