// checkpoint.cpp — HDF5 checkpoints (see checkpoint.h for the file layout,
// the crash-safety protocol and the error rules).
//
// Dimension letters: E experts (global), E_local experts of this rank, EP
// expert-parallel size (E = EP * E_local).
// Tested by tests/test_checkpoint.cpp and tests/mpi_test_checkpoint.cpp.
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>

#include "rmoe/core/error.h"
#include "rmoe/core/format.h"
#include "rmoe/core/h5.h"
#include "rmoe/data/loader.h"
#include "rmoe/data/synthetic.h"

namespace rmoe {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "rmoe-checkpoint";
constexpr int64_t kVersion = 1;
constexpr const char* kDescription =
    "rmoe training checkpoint. /model/<name>: parameters (float32, names and shapes of docs/MODEL.md; expert "
    "tensors are [E, ...] with the expert index first, independent of the number of ranks). "
    "/optimizer/exp_avg/<name> and /optimizer/exp_avg_sq/<name>: AdamW first and second moments, same names and "
    "shapes. step: training steps completed (skipped_steps of them had a non-finite loss or gradient and no "
    "update). consumed_tokens: the sum of every step's global batch x sequence length. The data order and all "
    "randomness are functions of (seed, step). run_id: the run that wrote it (kept across resumes). "
    "tokenizer_fingerprint: what the token ids mean. config: the resolved training configuration (rmoe_train "
    "--config reads it).";
constexpr const char* kTmpSuffix = ".tmp";
constexpr int64_t kChunkBytes = int64_t(1) << 20;  // HDF5 chunk size limit of every dataset

// The three tensor families of a checkpoint and the buffers that hold them.
struct Section {
  std::string group;        // "/model", "/optimizer/exp_avg", "/optimizer/exp_avg_sq"
  std::vector<float>* rep;  // layout of params->replicated()
  std::vector<float>* exp;  // layout of params->expert()
};

std::vector<Section> sections(const TrainState& s, bool with_moments) {
  std::vector<Section> out = {{"/model", &s.params->replicated(), &s.params->expert()}};
  if (with_moments) {
    out.push_back({"/optimizer/exp_avg", s.m_rep, s.m_exp});
    out.push_back({"/optimizer/exp_avg_sq", s.v_rep, s.v_exp});
  }
  return out;
}

// The shape a tensor has in a file: expert tensors [E_local, ...] -> [E, ...].
std::vector<int64_t> file_shape(const ParamSpec& spec, int ep_size) {
  std::vector<int64_t> shape = spec.shape;
  if (spec.expert) shape[0] *= ep_size;
  return shape;
}

// ckpt_<digits>.h5 -> step; false for anything else (temporary files included).
bool parse_checkpoint_name(const std::string& name, int64_t* step) {
  const std::string prefix = "ckpt_", suffix = ".h5";
  if (name.size() < prefix.size() + 8 + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size() - suffix.size();
  if (!std::all_of(first, last, [](char c) { return c >= '0' && c <= '9'; })) return false;
  return std::from_chars(first, last, *step).ec == std::errc();
}

// Complete checkpoints of dir, ascending by step.
std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    int64_t step = 0;
    if (entry.is_regular_file(ec) && parse_checkpoint_name(entry.path().filename().string(), &step))
      out.emplace_back(step, entry.path());
  }
  RMOE_CHECK(!ec, "cannot list checkpoint directory '" << dir << "': " << ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

// fsync a file or directory so a rename or its contents survive a power cut.
void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0));
  RMOE_CHECK(fd >= 0, "cannot open '" << path << "' to sync it: " << std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems cannot sync a directory; the rename is still atomic there.
  RMOE_CHECK(rc == 0 || (directory && (err == EINVAL || err == EROFS)),
             "fsync of '" << path << "' failed: " << std::strerror(err));
}

// Collective over comm: returns when no rank has an error; otherwise every rank
// throws the message of the lowest failing rank (UsageError if that rank's was).
void agree_or_throw(Comm& comm, const std::string& error, bool usage_error) {
  double worst = error.empty() ? 0.0 : double(comm.size() - comm.rank());  // lowest failing rank is largest
  comm.allreduce_max(&worst, 1);
  if (worst == 0.0) return;
  const int root = comm.size() - int(worst);
  int64_t header[2] = {int64_t(error.size()), usage_error ? 1 : 0};
  comm.broadcast(header, int64_t(sizeof header), root);
  std::string msg = comm.rank() == root ? error : std::string(size_t(header[0]), '\0');
  comm.broadcast(msg.data(), header[0], root);
  if (comm.rank() != root) msg += " (reported by rank " + std::to_string(root) + ")";
  if (header[1]) throw UsageError(msg);
  throw Error(msg);
}

// Checks that s and g fit together; "" if they do.
std::string check_state(const TrainState& s, const ProcessGroups& g, bool need_moments) {
  std::ostringstream os;
  if (!s.params) return "TrainState.params is null";
  if (need_moments && !(s.m_rep && s.v_rep && s.m_exp && s.v_exp))
    return "TrainState needs all four AdamW moment vectors (m_rep, v_rep, m_exp, v_exp)";
  if (!g.world || !g.ep) return "ProcessGroups has no world or ep communicator";
  if (g.ep_size < 1 || g.num_local_experts < 1)
    return "ProcessGroups has no experts (ep_size or num_local_experts < 1)";
  for (const ParamSpec& spec : s.params->specs())
    if (spec.expert && (spec.shape.empty() || spec.shape[0] != g.num_local_experts)) {
      os << "expert tensor '" << spec.name << "' has shape " << shape_text(spec.shape) << " but this rank holds "
         << g.num_local_experts << " experts";
      return os.str();
    }
  return "";
}

// Whether an error message already starts by naming this checkpoint.
bool names_file_first(const std::string& what, const std::string& path) {
  return what.rfind("checkpoint '" + path + "'", 0) == 0 || what.rfind("'" + path + "'", 0) == 0;
}

CheckpointHeader read_header(const h5::File& f) {
  const std::string& path = f.path();
  if (!f.has_attr("format") || f.attr_string("format") != kFormat)
    throw Error("'" + path + "' is not an rmoe checkpoint (its root attribute format is not \"" + kFormat +
                "\"); pass a file written by rmoe_train --save");
  CheckpointHeader h;
  h.version = f.attr_int("version");
  if (h.version != kVersion)
    throw Error("checkpoint '" + path + "' has format version " + std::to_string(h.version) +
                "; this build reads version " + std::to_string(kVersion));
  h.step = f.attr_int("step");
  h.consumed_tokens = f.attr_int("consumed_tokens");
  h.seed = h5::attr_uint64(f, "seed");
  h.num_experts = f.attr_int("num_experts");
  h.saved_world_size = f.attr_int("saved_world_size");
  h.saved_expert_parallel_size = f.attr_int("saved_expert_parallel_size");
  h.config_ini = f.attr_string("config");
  // Attributes added later; older files read as 0 / "" (unknown).
  auto int_or_zero = [&](const char* name) { return f.has_attr(name) ? f.attr_int(name) : int64_t(0); };
  auto string_or_empty = [&](const char* name) { return f.has_attr(name) ? f.attr_string(name) : std::string(); };
  h.skipped_steps = int_or_zero("skipped_steps");
  h.skipped_in_a_row = int_or_zero("skipped_in_a_row");
  h.run_id = string_or_empty("run_id");
  h.tokenizer_fingerprint = string_or_empty("tokenizer_fingerprint");
  h.tokenizer = string_or_empty("tokenizer");
  return h;
}

// Non-finite values of one section's buffers (local rows only).
void count_non_finite(const Section& sec, const ParamStore<float>& params, NonFiniteReport& r) {
  for (const ParamSpec& spec : params.specs()) {
    const float* x = (spec.expert ? sec.exp : sec.rep)->data() + spec.offset;
    int64_t bad = 0;
    for (int64_t i = 0, n = spec.numel(); i < n; ++i) bad += !std::isfinite(x[i]);
    if (bad == 0) continue;
    if (r.tensors++ == 0) r.first_tensor = sec.group + "/" + spec.name;
    r.values += bad;
  }
}

std::string non_finite_text(const NonFiniteReport& r) {
  return std::to_string(r.values) + " non-finite value(s) in " + std::to_string(r.tensors) +
         " tensor(s), the first in '" + r.first_tensor + "'";
}

// The run id of a checkpoint file; "" when it has none or cannot be read.
std::string run_id_of(const fs::path& path) {
  try {
    const h5::Lock lock;
    h5::File f(path.string(), h5::File::readonly);
    return f.has_attr("run_id") ? f.attr_string("run_id") : std::string();
  } catch (const std::exception&) {
    return "";
  }
}

// Opens a checkpoint for reading with one clear message for every way it can fail.
std::unique_ptr<h5::File> open_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error("checkpoint '" + path + "' does not exist");
  if (fs::is_directory(path, ec))
    throw Error("checkpoint '" + path + "' is a directory; pass a checkpoint file (DIR/ckpt_<step>.h5) or let "
                "--load DIR pick the newest");
  const h5::Lock lock;  // the failed open and its error stack are one step (h5.h)
  try {
    return std::make_unique<h5::File>(path, h5::File::readonly);
  } catch (const Error& e) {
    const std::string why = h5::error_stack_text();
    throw Error("checkpoint '" + path + "' cannot be opened: it is not an HDF5 file or it is truncated or corrupt" +
                (why.empty() ? std::string() : " (HDF5: " + why + ")") + "; use an older checkpoint");
  }
}

// Everything load_checkpoint does on one rank, without the agreement.
void load_local(const std::string& path, TrainState& s, const ProcessGroups& g) {
  const bool with_moments = s.m_rep != nullptr;
  if (const std::string bad = check_state(s, g, with_moments); !bad.empty()) throw Error("load_checkpoint: " + bad);
  std::unique_ptr<h5::File> file = open_checkpoint(path);
  const h5::File& f = *file;
  try {
    const CheckpointHeader h = read_header(f);
    const std::vector<Section> secs = sections(s, with_moments);

    // 1. Every expected tensor present with its shape, before reading anything.
    std::set<std::string> expected;
    for (const Section& sec : secs)
      for (const ParamSpec& spec : s.params->specs()) {
        const std::string name = sec.group + "/" + spec.name;
        const std::vector<int64_t> want = file_shape(spec, g.ep_size);
        expected.insert(name);
        if (!f.exists(name))
          throw UsageError("checkpoint '" + path + "' has no tensor '" + name + "' " + shape_text(want) +
                           " that this configuration needs; it was saved with other model options (see rmoe_ckpt "
                           "info " + path + ")");
        const std::vector<int64_t> have = f.shape(name);
        if (have != want)
          throw UsageError("checkpoint '" + path + "': tensor '" + name + "' has shape " + shape_text(have) +
                           " in the file but " + shape_text(want) +
                           " in this configuration; the model options differ from the ones it was saved with "
                           "(see rmoe_ckpt info " + path + ")");
      }
    for (const std::string& name : h5::list_datasets(f, "/model"))
      if (!expected.count(name))
        throw UsageError("checkpoint '" + path + "' has tensor '" + name + "' " + shape_text(f.shape(name)) +
                         " that this configuration does not; it was saved with other model options (see "
                         "rmoe_ckpt info " + path + ")");

    // 2. The values: replicated tensors whole, expert tensors this rank's rows.
    for (const Section& sec : secs) {
      if (sec.rep->empty()) sec.rep->assign(s.params->replicated().size(), 0.f);
      if (sec.exp->empty()) sec.exp->assign(s.params->expert().size(), 0.f);
      RMOE_CHECK(sec.rep->size() == s.params->replicated().size() && sec.exp->size() == s.params->expert().size(),
                 "moment vectors for " << sec.group << " do not match the parameter buffers");
      for (const ParamSpec& spec : s.params->specs()) {
        float* out = (spec.expert ? sec.exp : sec.rep)->data() + spec.offset;
        const int64_t first = spec.expert ? g.first_local_expert : 0;
        h5::read_rows(f, sec.group + "/" + spec.name, first, spec.shape[0], out);
      }
    }
    // 3. No value that training or evaluation could not use.
    NonFiniteReport bad;
    for (const Section& sec : secs) count_non_finite(sec, *s.params, bad);
    if (bad.values > 0)
      throw Error("checkpoint '" + path + "' holds " + non_finite_text(bad) +
                  " (written by a run that diverged); it can be neither resumed from nor evaluated: use an older "
                  "checkpoint (rmoe_ckpt info shows each file's state)");
    s.step = h.step;
    s.consumed_tokens = h.consumed_tokens;
    s.seed = h.seed;
    s.config_ini = h.config_ini;
    s.skipped_steps = h.skipped_steps;
    s.skipped_in_a_row = h.skipped_in_a_row;
    s.run_id = h.run_id;
    s.tokenizer_fingerprint = h.tokenizer_fingerprint;
    s.tokenizer = h.tokenizer;
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    const std::string what = e.what();
    if (names_file_first(what, path)) throw;
    throw Error("checkpoint '" + path + "' is corrupt or truncated; use an older checkpoint. Details: " + what);
  }
}

}  // namespace

std::string checkpoint_file_name(int64_t step) {
  char name[40];
  std::snprintf(name, sizeof name, "ckpt_%08lld.h5", static_cast<long long>(step));
  return name;
}

std::string save_checkpoint(const std::string& dir, const TrainState& s, const ProcessGroups& g, int keep) {
  // Local checks first, agreed on before any collective that depends on them.
  std::string error = check_state(s, g, true);
  if (error.empty() && g.ep->size() != g.ep_size)
    error = "groups.ep has " + std::to_string(g.ep->size()) + " ranks but ep_size is " + std::to_string(g.ep_size);
  if (error.empty() && g.first_local_expert != g.ep->rank() * g.num_local_experts)
    error = "EP-rank " + std::to_string(g.ep->rank()) + " holds experts from " +
            std::to_string(g.first_local_expert) + ", not from EP-rank * E_local";
  if (error.empty())
    for (const Section& sec : sections(s, true))
      if (sec.rep->size() != s.params->replicated().size() || sec.exp->size() != s.params->expert().size())
        error = "moment vectors for " + sec.group + " do not match the parameter buffers";
  agree_or_throw(*g.world, error.empty() ? "" : "save_checkpoint: " + error, false);
  // Nothing non-finite is ever written (one pass over every buffer, before any file exists).
  if (const NonFiniteReport bad = find_non_finite(s, true); bad.values > 0)
    error = "refusing to save step " + std::to_string(s.step) + " into '" + dir + "': this rank's state holds " +
            non_finite_text(bad) + "; the checkpoints already in '" + dir + "' are kept";
  agree_or_throw(*g.world, error, false);

  const bool writer = g.world->rank() == 0;
  const fs::path final_path = fs::path(dir) / checkpoint_file_name(s.step);
  const std::string tmp_path = final_path.string() + kTmpSuffix;
  // The writer records its first failure and keeps taking part in the gathers.
  auto attempt = [&](auto&& work) {
    if (!writer || !error.empty()) return;
    try {
      work();
    } catch (const std::exception& e) {
      error = e.what();
    }
  };
  std::unique_ptr<h5::File> file;
  attempt([&] {
    fs::create_directories(dir);
    for (const auto& entry : fs::directory_iterator(dir)) {  // left by a writer that crashed
      const std::string name = entry.path().filename().string();
      if (name.rfind("ckpt_", 0) == 0 && name.size() > 7 && name.compare(name.size() - 7, 7, ".h5.tmp") == 0)
        fs::remove(entry.path());
    }
    // Never replace another run's checkpoint of the same step.
    if (std::error_code ec; fs::exists(final_path, ec) && !s.run_id.empty()) {
      const std::string other = run_id_of(final_path);
      if (!other.empty() && other != s.run_id)
        throw Error("'" + final_path.string() + "' belongs to run " + other + " (this run is " + s.run_id +
                    "); save into a directory of this run only");
    }
    file = std::make_unique<h5::File>(tmp_path, h5::File::truncate_checksummed);
    h5::use_checksummed_chunk_indexes(*file);
  });

  std::vector<float> gathered;  // one expert tensor [E, ...]
  for (const Section& sec : sections(s, true))
    for (const ParamSpec& spec : s.params->specs()) {
      const float* data = (spec.expert ? sec.exp : sec.rep)->data() + spec.offset;
      if (spec.expert && g.ep_size > 1) {
        gathered.resize(size_t(spec.numel()) * size_t(g.ep_size));
        g.ep->allgather(data, spec.numel(), gathered.data());  // EP-rank order = expert order
        data = gathered.data();
      }
      // Expert tensors: chunks inside one expert, so a rank reads only its experts' chunks.
      const int64_t chunk_bytes = spec.expert ? std::min(kChunkBytes, spec.numel() / spec.shape[0] * 4) : kChunkBytes;
      attempt([&] {
        h5::write_checksummed(*file, sec.group + "/" + spec.name, data, file_shape(spec, g.ep_size), chunk_bytes);
      });
    }

  attempt([&] {
    h5::File& f = *file;
    // Strings fixed-length: inside the checksummed object header (see h5.h).
    h5::set_attr_fixed_string(f, "format", kFormat);
    f.set_attr("version", kVersion);
    h5::set_attr_fixed_string(f, "description", kDescription);
    f.set_attr("step", s.step);
    f.set_attr("consumed_tokens", s.consumed_tokens);
    h5::set_attr_uint64(f, "seed", s.seed);
    f.set_attr("num_experts", int64_t(g.ep_size) * g.num_local_experts);
    f.set_attr("saved_world_size", int64_t(g.world->size()));
    f.set_attr("saved_expert_parallel_size", int64_t(g.ep_size));
    f.set_attr("skipped_steps", s.skipped_steps);
    f.set_attr("skipped_in_a_row", s.skipped_in_a_row);
    h5::set_attr_fixed_string(f, "run_id", s.run_id);
    h5::set_attr_fixed_string(f, "tokenizer_fingerprint", s.tokenizer_fingerprint);
    h5::set_attr_fixed_string(f, "tokenizer", s.tokenizer);
    h5::set_attr_fixed_string(f, "config", s.config_ini);
    h5::set_attr_fixed_string(f, "description", "AdamW moments: exp_avg = m, exp_avg_sq = v (torch.optim.AdamW names)",
                              "/optimizer");
    h5::flush(f);
    file->close();  // throws when HDF5 cannot write what it still holds (disk full): never renamed then
    fsync_path(tmp_path, false);
    fs::rename(tmp_path, final_path);
    fsync_path(dir, true);
  });
  if (writer && !error.empty()) {  // leave nothing half-written behind
    file.reset();
    std::error_code ec;
    fs::remove(tmp_path, ec);
  }
  agree_or_throw(*g.world, error.empty() ? "" : "saving checkpoint '" + final_path.string() + "' failed: " + error,
                 false);

  // Retention: the newest `keep` of this run by step; another run's files (or
  // files whose run id cannot be read) are never deleted. Failures here only
  // warn (the save succeeded).
  if (writer && keep > 0) {
    try {
      std::vector<std::pair<int64_t, fs::path>> own;
      for (auto& entry : list_checkpoints(dir))
        if (fs::equivalent(entry.second, final_path) || run_id_of(entry.second) == s.run_id) own.push_back(entry);
      const int64_t excess = int64_t(own.size()) - keep;
      for (int64_t i = 0; i < excess; ++i)
        if (!fs::equivalent(own[size_t(i)].second, final_path)) fs::remove(own[size_t(i)].second);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rmoe: warning: could not delete old checkpoints in '%s': %s\n", dir.c_str(), e.what());
    }
  }
  return final_path.string();
}

std::string find_latest_checkpoint(const std::string& dir) {
  const auto all = list_checkpoints(dir);
  return all.empty() ? std::string() : all.back().second.string();
}

std::string resolve_load_path(const std::string& load) {
  std::error_code ec;
  if (load.empty()) return "";
  if (fs::is_directory(load, ec)) return find_latest_checkpoint(load);
  if (fs::exists(load, ec)) return load;
  if (load.size() >= 3 && load.compare(load.size() - 3, 3, ".h5") == 0)
    throw UsageError("--load=" + load + ": no such checkpoint file");
  return "";
}

void load_checkpoint(const std::string& path, TrainState& s, const ProcessGroups& g) {
  std::string error;
  bool usage = false;
  try {
    load_local(path, s, g);
  } catch (const UsageError& e) {
    error = e.what();
    usage = true;
  } catch (const std::exception& e) {
    error = e.what();
  }
  RMOE_CHECK(g.world, "load_checkpoint: ProcessGroups has no world communicator");
  agree_or_throw(*g.world, error, usage);
}

CheckpointHeader read_checkpoint_header(const std::string& path) {
  std::unique_ptr<h5::File> f = open_checkpoint(path);
  try {
    return read_header(*f);
  } catch (const Error& e) {
    const std::string what = e.what();
    if (names_file_first(what, path)) throw;
    throw Error("checkpoint '" + path + "' has a damaged or incomplete header: " + what);
  }
}

std::vector<ConfigChange> config_changes(const std::string& ini_a, const std::string& ini_b) {
  // key = value lines; comments and blank lines skipped.
  auto parse = [](const std::string& ini) {
    std::vector<std::pair<std::string, std::string>> kv;
    std::istringstream in(ini);
    for (std::string line; std::getline(in, line);) {
      const size_t eq = line.find('=');
      if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
      auto trim = [](std::string t) {
        t.erase(0, t.find_first_not_of(" \t"));
        t.erase(t.find_last_not_of(" \t\r") + 1);
        return t;
      };
      kv.emplace_back(trim(line.substr(0, eq)), trim(line.substr(eq + 1)));
    }
    return kv;
  };
  auto quoted = [](const std::string& v) { return v.empty() ? std::string("\"\"") : v; };
  const auto a = parse(ini_a), b = parse(ini_b);
  std::map<std::string, std::string> bmap(b.begin(), b.end());
  std::vector<ConfigChange> out;
  std::set<std::string> seen;
  for (const auto& [key, value] : a) {
    seen.insert(key);
    const auto it = bmap.find(key);
    const std::string other = it == bmap.end() ? "(none)" : quoted(it->second);
    if (other != quoted(value)) out.push_back({key, quoted(value), other});
  }
  for (const auto& [key, value] : b)
    if (!seen.count(key)) out.push_back({key, "(none)", quoted(value)});
  return out;
}

std::vector<std::string> config_differences(const std::string& ini_a, const std::string& ini_b) {
  std::vector<std::string> out;
  for (const ConfigChange& c : config_changes(ini_a, ini_b)) out.push_back(c.key + ": " + c.from + " -> " + c.to);
  return out;
}

const std::vector<std::string>& model_shaping_options() {
  // Parameter names and shapes: layers, widths, heads, experts, router type
  // and widths (router-dim, xmoe-dim), vocabulary, tied embeddings, a shared
  // router projection. The function computed from the same parameters: top-k,
  // the router logit residual. The gradient that made the weights:
  // router-detach and router-logit-residual-detach (ablations, model variants
  // of their own). How the weights came to be: init-method-std, router-init
  // and seed (also the data order). Everything else
  // (sequence length, batch sizes, learning rates, aux/z loss coefficients,
  // the expert capacity, AdamW, clipping, intervals, paths, layout, device)
  // may change on resume.
  static const std::vector<std::string> keys = {
      "num-layers",  "hidden-size", "ffn-hidden-size", "num-attention-heads", "vocab-size",
      "num-experts", "moe-router-topk", "moe-router-type", "router-dim", "router-detach",
      "tie-embeddings", "init-method-std", "router-init", "seed",
      "xmoe-dim",
      "router-shared-proj",
      "router-logit-residual", "router-logit-residual-detach"};
  return keys;
}

bool is_model_shaping_option(const std::string& key) {
  const auto& keys = model_shaping_options();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

ResumeChanges compare_for_resume(const TrainState& saved, const std::string& now_ini,
                                 const std::string& now_tokenizer_fingerprint, const std::string& now_tokenizer) {
  ResumeChanges out;
  // A model-shaping option newer than the checkpoint (absent from its INI, e.g.
  // router-init) meant its default then: the default now is no model change.
  std::map<std::string, std::string> defaults;
  for (const ConfigChange& c : config_changes("", config_to_ini(TrainConfig{}))) defaults[c.key] = c.to;
  for (ConfigChange& c : config_changes(saved.config_ini, now_ini)) {
    const bool newer_at_default = c.from == "(none)" && defaults.count(c.key) && defaults[c.key] == c.to;
    (is_model_shaping_option(c.key) && !newer_at_default ? out.refused : out.reported).push_back(std::move(c));
  }
  // An old file without a fingerprint cannot be checked (the caller warns).
  if (!saved.tokenizer_fingerprint.empty() && saved.tokenizer_fingerprint != now_tokenizer_fingerprint)
    out.refused.push_back({"tokenizer", saved.tokenizer + " [" + saved.tokenizer_fingerprint + "]",
                           now_tokenizer + " [" + now_tokenizer_fingerprint + "]"});
  return out;
}

std::string tokenizer_fingerprint_of(const Tokenizer& tok) {
  return tok.name() + ":" + tok.fingerprint() + ":" + std::to_string(tok.vocab_size());
}

std::string synthetic_tokenizer_fingerprint(const std::string& data_path, uint64_t seed, int vocab_size) {
  return data_path + ":seed=" + std::to_string(seed) + ":vocab=" + std::to_string(vocab_size);
}

std::string tokenizer_fingerprint_of(const BatchSource& source, const std::string& data_path, uint64_t seed) {
  if (const auto* shards = dynamic_cast<const ShardBatchSource*>(&source))
    return tokenizer_fingerprint_of(shards->dataset().tokenizer());
  return synthetic_tokenizer_fingerprint(data_path, seed, source.vocab_size());
}

std::string tokenizer_description_of(const BatchSource& source, const std::string& data_path, uint64_t seed) {
  if (const auto* shards = dynamic_cast<const ShardBatchSource*>(&source))
    return shards->dataset().tokenizer().describe();
  return data_path + " (seed " + std::to_string(seed) + ", vocabulary " + std::to_string(source.vocab_size()) + ")";
}

std::string new_run_id() {
  std::random_device rd;
  const uint64_t t = uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
  uint64_t x = (uint64_t(rd()) << 32) ^ uint64_t(rd()) ^ t ^ (uint64_t(::getpid()) << 17);
  x ^= x >> 33;  // splitmix64 finaliser: every input bit moves every output bit
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(x));
  return buf;
}

std::vector<std::string> checkpoints_of_other_runs(const std::string& dir, const std::string& run_id,
                                                   bool unknown_is_foreign) {
  std::vector<std::string> out;
  for (const auto& [step, path] : list_checkpoints(dir)) {
    const std::string id = run_id_of(path);
    if (id.empty() ? unknown_is_foreign : id != run_id)
      out.push_back(path.filename().string() + (id.empty() ? " (no run id)" : " (run " + id + ")"));
  }
  return out;
}

void probe_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create the directory: " + ec.message());
  if (!fs::is_directory(dir, ec)) throw Error("it is not a directory");
  const std::string probe = (fs::path(dir) / (".rmoe_write_probe_" + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot create a file there: " + std::string(std::strerror(errno)));
  const char bytes[] = "rmoe write probe\n";
  const bool ok = ::write(fd, bytes, sizeof bytes - 1) == ssize_t(sizeof bytes - 1) && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  ::unlink(probe.c_str());
  if (!ok) throw Error("cannot write and sync a file there: " + std::string(std::strerror(err)));
}

NonFiniteReport find_non_finite(const TrainState& s, bool with_moments) {
  RMOE_CHECK(s.params, "find_non_finite: TrainState.params is null");
  RMOE_CHECK(!with_moments || (s.m_rep && s.v_rep && s.m_exp && s.v_exp),
             "find_non_finite: TrainState needs all four moment vectors");
  NonFiniteReport r;
  for (const Section& sec : sections(s, with_moments)) count_non_finite(sec, *s.params, r);
  return r;
}

}  // namespace rmoe
