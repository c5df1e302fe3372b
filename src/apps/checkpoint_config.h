// checkpoint_config.h — for the apps that use a trained model (rmoe_eval,
// rmoe_generate): find the checkpoint --load names and rebuild the run's
// TrainConfig from the INI text the checkpoint stores (root attribute
// `config`, checkpoint.h), with command-line options on top.
//
//   const std::string path = checkpoint_to_load("rmoe_eval", load);  // UsageError if none
//   const CheckpointHeader h = read_checkpoint_header(path);
//   TrainConfig cfg = config_from_checkpoint_ini(h.config_ini, path, {"--micro-batch-size=2"});
//
// The INI goes through parse_train_config (via a temporary file read by
// --config), so the options mean exactly what they meant to rmoe_train and an
// override is validated the same way. Header-only: the apps are single files.
// Tested through tests/cli/eval_generate.sh and tests/cli/quickstart.sh.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "rmoe/core/error.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"

namespace rmoe {

// The checkpoint file --load=LOAD names: a file as is, a directory's newest
// checkpoint. Throws UsageError (one line) when there is none.
inline std::string checkpoint_to_load(const std::string& app, const std::string& load) {
  if (load.empty()) throw UsageError("--load is required: a checkpoint file or a --save directory of rmoe_train");
  if (!std::filesystem::exists(load))
    throw UsageError("--load=" + load + ": no such file or directory; give a checkpoint (ckpt_<step>.h5) or the --save directory of a training run");
  const std::string path = resolve_load_path(load);
  if (path.empty())
    throw UsageError("--load=" + load + ": the directory holds no checkpoint (ckpt_<step>.h5); train with rmoe_train --save " + load + " first");
  return path;
}

// Parses `ini` (config_to_ini text) with `overrides` (flags as on rmoe_train's
// command line) taking precedence. `where` names the checkpoint in errors.
inline TrainConfig config_from_checkpoint_ini(const std::string& ini, const std::string& where,
                                              const std::vector<std::string>& overrides) {
  if (ini.empty()) throw UsageError(where + ": the checkpoint holds no configuration (attribute 'config')");
  std::string tmp = (std::filesystem::temp_directory_path() / "rmoe_ckpt_config_XXXXXX").string();
  const int fd = ::mkstemp(tmp.data());
  RMOE_CHECK(fd >= 0, "cannot create a temporary file in " << std::filesystem::temp_directory_path().string());
  bool written = ::write(fd, ini.data(), ini.size()) == ssize_t(ini.size());
  written = ::close(fd) == 0 && written;
  struct Remove {
    std::string path;
    ~Remove() { std::remove(path.c_str()); }
  } remove_tmp{tmp};
  RMOE_CHECK(written, "cannot write the temporary file " << tmp);
  std::vector<std::string> args = {"rmoe", "--config", tmp};
  args.insert(args.end(), overrides.begin(), overrides.end());
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    return parse_train_config(int(argv.size()), argv.data());
  } catch (const UsageError& e) {
    // A message about the temporary file means the stored configuration itself is bad.
    const std::string msg = e.what();
    if (msg.find(tmp) != std::string::npos)
      throw UsageError(where + ": its stored configuration is not readable by this build (" + msg + ")");
    throw;
  }
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

// True if `args` sets --name (either form).
inline bool has_option(const std::vector<std::string>& args, const std::string& name) {
  const std::string flag = "--" + name;
  for (const auto& a : args)
    if (a == flag || a.rfind(flag + "=", 0) == 0) return true;
  return false;
}

}  // namespace rmoe
