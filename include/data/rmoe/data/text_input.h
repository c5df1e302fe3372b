// text_input.h — the text rmoe_prepare reads (prepare.h): input paths
// resolved to files, UTF-8 validation, and a reader that yields lines (or
// blocks) and document ends. Part of the library so each piece is tested alone.
//
// Documents: every file is one document, standard input ("-") is one
// document; with split_blank_lines a run of blank (whitespace-only) lines also
// ends a document and is dropped. Directories are walked recursively in sorted
// order; names starting with '.' are skipped.
//
// Tested by tests/test_data.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rmoe {

struct InputFile {
  std::string path;   // what is opened ("" for standard input)
  std::string name;   // what messages call it
  int64_t size = -1;  // bytes, -1 if unknown (standard input)
};

// --input paths -> files in reading order. Throws UsageError naming the path
// for a missing one, an empty or unlistable directory, something that is
// neither file nor directory, "-" given twice, or a file that cannot be
// opened (checked here, before any work).
std::vector<InputFile> resolve_inputs(const std::vector<std::string>& inputs);

// Length of the longest valid UTF-8 prefix of s: overlong forms, surrogates
// (U+D800..U+DFFF), code points above U+10FFFF, stray continuation bytes and
// a sequence cut by the end all stop it.
size_t valid_utf8_prefix(std::string_view s);

// True if s holds only whitespace (space, \t, \r, \n, \f, \v); true for "".
bool is_blank_line(std::string_view s);

// Copies standard input into `path` (created or truncated) and returns the
// bytes copied. Throws UsageError when standard input cannot be read, Error
// when the file cannot be written.
int64_t spool_standard_input(const std::string& path);

// Reads the inputs as a sequence of lines (each with its '\n'; a line longer
// than kMaxPiece comes in pieces cut at UTF-8 boundaries) and document ends.
// Without `lines`, pieces are blocks of up to kMaxPiece bytes (faster, for the
// byte tokenizer). require_utf8 / forbid_nul throw UsageError naming the file
// and the byte offset of the first invalid UTF-8 / NUL byte.
class InputReader {
 public:
  static constexpr size_t kBuffer = size_t(4) << 20, kMaxPiece = size_t(1) << 20;

  InputReader(const std::vector<InputFile>& files, bool lines, bool split_blank_lines, bool require_utf8,
              bool forbid_nul);
  ~InputReader();
  InputReader(const InputReader&) = delete;
  InputReader& operator=(const InputReader&) = delete;

  // false at the end; else either *doc_end is true or *line is set (valid
  // until the next call).
  bool next(std::string_view* line, bool* doc_end);

  int64_t bytes_read() const { return bytes_read_; }

 private:
  void open_file(size_t i);
  void close_file();
  void read_more();

  const std::vector<InputFile>& files_;
  bool lines_, split_blank_, utf8_, no_nul_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
  size_t next_file_ = 0, current_ = 0;
  int fd_ = -1;
  int64_t offset_ = 0;  // file offset of buf_[begin_]
  int64_t bytes_read_ = 0;
  bool eof_ = false, doc_has_text_ = false;
};

}  // namespace rmoe
