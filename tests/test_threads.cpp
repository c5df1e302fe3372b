// use_thread_defaults (core/threads.h): the apps' threading defaults. Each case
// forks a child that sets up its environment and calls use_thread_defaults,
// which re-executes this test binary; with RMOE_THREADS_TEST_OUT set, the
// re-executed binary writes what it sees there and exits before any test runs
// (report_and_exit_if_child). A child that was not re-executed writes "no exec".
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "rmoe/core/threads.h"

using namespace rmoe;

namespace {

std::string env_or(const char* name, const char* none) {
  const char* v = std::getenv(name);
  return v ? v : none;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs use_thread_defaults in a child with OMP_WAIT_POLICY and
// OPENBLAS_THREAD_TIMEOUT as given (nullptr: unset); returns what the
// process that ran afterwards wrote.
std::string child_sees(const char* wait_policy, const char* timeout) {
  const std::string out = ::testing::TempDir() + "rmoe_threads_test_" + std::to_string(::getpid()) + ".txt";
  std::remove(out.c_str());
  const pid_t pid = ::fork();
  if (pid == 0) {
    setenv("RMOE_THREADS_TEST_OUT", out.c_str(), 1);
    if (wait_policy) setenv("OMP_WAIT_POLICY", wait_policy, 1); else unsetenv("OMP_WAIT_POLICY");
    if (timeout) setenv("OPENBLAS_THREAD_TIMEOUT", timeout, 1); else unsetenv("OPENBLAS_THREAD_TIMEOUT");
    std::string self = "test_threads";
    char* argv[] = {self.data(), nullptr};
    use_thread_defaults(argv, 1);
    std::ofstream(out) << "no exec";
    std::_Exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  const std::string seen = read_all(out);
  std::remove(out.c_str());
  return seen;
}

// The re-executed child: runs at load, before gtest's main.
const bool report_and_exit_if_child = [] {
  if (const char* out = std::getenv("RMOE_THREADS_TEST_OUT")) {
    std::ofstream(out) << env_or("OMP_WAIT_POLICY", "unset") << " " << env_or("OPENBLAS_THREAD_TIMEOUT", "unset");
    std::_Exit(0);
  }
  return false;
}();

}  // namespace

TEST(Threads, SetsPassiveWaitAndShortBlasSpinThenReExecutes) {
  EXPECT_EQ(child_sees(nullptr, nullptr), "passive " + std::to_string(kOpenBlasThreadTimeout));
}

TEST(Threads, KeepsTheUsersSettings) {
  EXPECT_EQ(child_sees("active", nullptr), "active " + std::to_string(kOpenBlasThreadTimeout));
  EXPECT_EQ(child_sees(nullptr, "20"), "passive 20");
  EXPECT_EQ(child_sees("active", "20"), "no exec");  // nothing to set: no re-exec
}
