// staging.h — a directory that appears complete or not at all: everything is
// written into a temporary sibling "<output>.tmp-<pid>", which takes the
// place of <output> only when commit() is called (prepare.h: rmoe_prepare's
// safety rules). On any error before that the temporary directory is removed
// and an existing <output> is untouched.
//
//   StagedDirectory out(o.output, o.overwrite);  // refuses what must not be replaced
//   write_everything_into(out.path());
//   out.commit();                                 // <output> now holds it
//
// Tested by tests/test_data.cpp.
#pragma once
#include <cstdint>
#include <string>

namespace rmoe {

class StagedDirectory {
 public:
  // Checks that `output` may be (re)placed: absent, an empty directory, or
  // (with overwrite) a dataset directory (dataset.h); anything else — a
  // file, a dataset without overwrite, a non-empty directory that is no
  // dataset — is a UsageError naming --output. Then creates the temporary
  // sibling (and missing parents of `output`).
  StagedDirectory(const std::string& output, bool overwrite);
  // Removes the temporary directory unless commit() succeeded.
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  const std::string& path() const { return tmp_; }       // where to write
  const std::string& output() const { return output_; }  // normalised, without a trailing '/'

  // Moves the temporary directory into place: a rename, after moving an
  // existing output aside (removed once the new one is in place).
  void commit();

 private:
  std::string output_, tmp_;
  bool replace_ = false, committed_ = false;
};

// Bytes of all regular files below dir (0 if it cannot be listed).
int64_t directory_bytes(const std::string& dir);

}  // namespace rmoe
