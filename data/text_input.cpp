// text_input.cpp — input files, UTF-8 checks and the line reader of
// rmoe_prepare (see text_input.h).
#include "rmoe/data/text_input.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "rmoe/core/error.h"

namespace rmoe {

namespace fs = std::filesystem;

std::vector<InputFile> resolve_inputs(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw UsageError("--input is required: text files, directories, or - for standard input");
  std::vector<InputFile> out;
  bool have_stdin = false;
  for (const std::string& p : inputs) {
    if (p == "-") {
      if (have_stdin) throw UsageError("--input=- is given twice (standard input can be read once)");
      have_stdin = true;
      out.push_back({"", "standard input", -1});
      continue;
    }
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    if (!fs::exists(st)) throw UsageError("--input=" + p + ": does not exist");
    if (fs::is_directory(st)) {
      std::vector<std::string> files;
      for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const std::string leaf = it->path().filename().string();
        if (!leaf.empty() && leaf[0] == '.') {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file()) files.push_back(it->path().string());
      }
      if (ec) throw UsageError("--input=" + p + ": cannot list the directory (" + ec.message() + ")");
      if (files.empty()) throw UsageError("--input=" + p + ": the directory holds no files");
      std::sort(files.begin(), files.end());
      for (auto& f : files) out.push_back({f, f, int64_t(fs::file_size(f, ec))});
    } else if (fs::is_regular_file(st)) {
      out.push_back({p, p, int64_t(fs::file_size(p, ec))});
    } else {
      throw UsageError("--input=" + p + ": is neither a regular file nor a directory");
    }
  }
  for (const InputFile& f : out) {  // fail before any work if a file cannot be opened
    if (f.path.empty()) continue;
    const int fd = ::open(f.path.c_str(), O_RDONLY);
    if (fd < 0) throw UsageError("input '" + f.name + "' cannot be read: " + std::strerror(errno));
    ::close(fd);
  }
  return out;
}

bool is_blank_line(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' ||
                                                             c == '\f' || c == '\v'; });
}

size_t valid_utf8_prefix(std::string_view s) {
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned c = p[i];
    size_t n;
    unsigned min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4, min = 0x10000;
    } else {
      return i;
    }
    if (i + n > s.size()) return i;
    unsigned cp = c & (0xFF >> (n + 1));
    for (size_t k = 1; k < n; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += n;
  }
  return i;
}

int64_t spool_standard_input(const std::string& spool) {
  const int fd = ::open(spool.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot create '" + spool + "': " + std::strerror(errno));
  std::vector<char> buf(size_t(1) << 20);
  int64_t n_total = 0;
  while (true) {
    const ssize_t got = ::read(0, buf.data(), buf.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      ::close(fd);
      throw UsageError(std::string("standard input cannot be read: ") + std::strerror(err));
    }
    if (got == 0) break;
    if (::write(fd, buf.data(), size_t(got)) != got) {
      ::close(fd);
      throw Error("writing '" + spool + "' failed (disk full?)");
    }
    n_total += got;
  }
  ::close(fd);
  return n_total;
}

// ---- InputReader ------------------------------------------------------------------

InputReader::InputReader(const std::vector<InputFile>& files, bool lines, bool split_blank_lines,
                         bool require_utf8, bool forbid_nul)
    : files_(files),
      lines_(lines || split_blank_lines),
      split_blank_(split_blank_lines),
      utf8_(require_utf8),
      no_nul_(forbid_nul),
      buf_(kBuffer) {}

InputReader::~InputReader() { close_file(); }

bool InputReader::next(std::string_view* line, bool* doc_end) {
  *doc_end = false;
  while (true) {
    if (fd_ < 0) {
      if (next_file_ == files_.size()) return false;
      open_file(next_file_++);
    }
    const std::string_view avail(buf_.data() + begin_, end_ - begin_);
    const size_t nl = lines_ ? avail.find('\n') : std::string_view::npos;
    std::string_view piece;
    if (nl != std::string_view::npos) {
      piece = avail.substr(0, nl + 1);
    } else if (avail.size() > kMaxPiece) {
      size_t cut = kMaxPiece;  // do not split a UTF-8 sequence
      while (cut > kMaxPiece - 4 && (static_cast<unsigned char>(avail[cut]) & 0xC0) == 0x80) --cut;
      piece = avail.substr(0, cut);
    } else if (!eof_) {
      read_more();
      continue;
    } else if (!avail.empty()) {
      piece = avail;
    } else {  // end of this file
      close_file();
      if (doc_has_text_) {
        doc_has_text_ = false;
        *doc_end = true;
        return true;
      }
      continue;
    }
    const int64_t piece_offset = offset_;
    begin_ += piece.size();
    offset_ += int64_t(piece.size());
    const bool complete_line = !piece.empty() && piece.back() == '\n';
    if (split_blank_ && complete_line && is_blank_line(piece)) {
      if (doc_has_text_) {
        doc_has_text_ = false;
        *doc_end = true;
        return true;
      }
      continue;
    }
    if (utf8_) {
      const size_t ok = valid_utf8_prefix(piece);
      if (ok != piece.size())
        throw UsageError("input '" + files_[current_].name + "' has invalid UTF-8 at byte offset " +
                         std::to_string(piece_offset + int64_t(ok)) +
                         "; --tokenizer sentencepiece needs UTF-8 text (use --tokenizer byte for other data)");
    }
    if (no_nul_) {
      const size_t nul = piece.find('\0');
      if (nul != std::string_view::npos)
        throw UsageError("input '" + files_[current_].name + "' has a NUL byte at byte offset " +
                         std::to_string(piece_offset + int64_t(nul)) +
                         "; the byte tokenizer reserves NUL as its end-of-document token (strip it: tr -d '\\000')");
    }
    doc_has_text_ = true;
    *line = piece;
    return true;
  }
}

void InputReader::open_file(size_t i) {
  current_ = i;
  fd_ = files_[i].path.empty() ? 0 : ::open(files_[i].path.c_str(), O_RDONLY);
  if (fd_ < 0) throw UsageError("input '" + files_[i].name + "' cannot be read: " + std::strerror(errno));
  begin_ = end_ = 0;
  offset_ = 0;
  eof_ = false;
  doc_has_text_ = false;
}

void InputReader::close_file() {
  if (fd_ > 0) ::close(fd_);
  fd_ = -1;
}

void InputReader::read_more() {
  if (begin_ > 0) {  // keep the unfinished line at the front
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  while (true) {
    const ssize_t got = ::read(fd_, buf_.data() + end_, buf_.size() - end_);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      throw UsageError("input '" + files_[current_].name + "' cannot be read at byte " +
                       std::to_string(offset_ + int64_t(end_)) + ": " + std::strerror(errno));
    if (got == 0) eof_ = true;
    end_ += size_t(got);
    bytes_read_ += got;
    return;
  }
}

}  // namespace rmoe
