// staging.cpp — the temporary sibling directory and its atomic replace (see staging.h).
#include "rmoe/data/staging.h"

#include <unistd.h>

#include <filesystem>

#include "rmoe/core/error.h"
#include "rmoe/data/dataset.h"

namespace rmoe {

namespace fs = std::filesystem;

namespace {

// Refuses an output that must not be replaced; returns whether it exists.
bool check_output(const std::string& out, bool overwrite) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return false;
  if (!fs::is_directory(out, ec)) throw UsageError("--output=" + out + ": exists and is not a directory");
  if (is_dataset_dir(out)) {
    if (!overwrite)
      throw UsageError("--output=" + out + ": already holds a dataset (" + kDatasetMetaFile +
                       "); pass --overwrite to replace it, or choose another directory");
    return true;
  }
  if (!fs::is_empty(out, ec))
    throw UsageError("--output=" + out + ": exists, is not empty and holds no rmoe dataset; choose another directory"
                     " (--overwrite replaces only a dataset)");
  return true;
}

}  // namespace

StagedDirectory::StagedDirectory(const std::string& output, bool overwrite) {
  const std::string out = fs::path(output).lexically_normal().string();
  output_ = !out.empty() && out.back() == '/' && out.size() > 1 ? out.substr(0, out.size() - 1) : out;
  replace_ = check_output(output_, overwrite);
  tmp_ = output_ + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  const fs::path parent = fs::path(output_).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (!fs::create_directory(tmp_, ec) && !fs::is_directory(tmp_))
    throw UsageError("--output=" + output + ": cannot create '" + tmp_ + "' (" + ec.message() + ")");
}

StagedDirectory::~StagedDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void StagedDirectory::commit() {
  if (replace_) {
    const std::string old = output_ + ".old-" + std::to_string(::getpid());
    fs::rename(output_, old);
    try {
      fs::rename(tmp_, output_);
    } catch (...) {  // put the old one back
      std::error_code ec;
      fs::rename(old, output_, ec);
      throw;
    }
    committed_ = true;
    fs::remove_all(old);
  } else {
    fs::rename(tmp_, output_);
    committed_ = true;
  }
}

int64_t directory_bytes(const std::string& dir) {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) n += int64_t(e.file_size());
  return n;
}

}  // namespace rmoe
