// checkpoint_config.h — a forwarder kept only because tests/fuzz/targets.h
// (in progress) includes it. The parser of a checkpoint's stored
// configuration is now the train library's parse_train_config_from_ini
// (train/config.h), and checkpoint_to_load / take_own_options / has_option
// live in app_options.h; no app includes this file. Delete it once
// tests/fuzz/targets.h includes those instead.
#pragma once
#include <string>
#include <vector>

#include "app_options.h"
#include "rmoe/train/config.h"

namespace rmoe {

inline TrainConfig config_from_checkpoint_ini(const std::string& ini, const std::string& where,
                                              const std::vector<std::string>& overrides) {
  return parse_train_config_from_ini(ini, where, overrides);
}

}  // namespace rmoe
