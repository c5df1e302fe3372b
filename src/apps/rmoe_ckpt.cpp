// rmoe_ckpt — inspect and compare rmoe checkpoints (include/rmoe/train/checkpoint.h).
//
//   rmoe_ckpt info FILE|DIR   the header (step, tokens, seed, skipped steps, run id,
//                             tokenizer, saved layout), the configuration, and every tensor
//                             with its shape, L2 norm and max |x|. Reads every value, so it
//                             also verifies every checksum and finds every non-finite value.
//                             A directory means its newest checkpoint.
//   rmoe_ckpt diff A B        step, tokens and seed, the configuration lines that differ,
//                             and for every tensor the max |a - b| and how many elements differ.
//
// Exit status: 0 fine (diff: the two training states are bit-identical;
// configuration differences alone are reported but do not count), 1 a missing,
// corrupt or foreign file, or (info) a file holding a NaN or an infinity (one
// line saying which and why, after the table), 2 bad usage, 3 (diff) the
// training states differ.
// Tested by tests/test_checkpoint.cpp (CheckpointNonFinite: info exits 1 on a
// poisoned file) and by hand.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "app_main.h"
#include "rmoe/core/error.h"
#include "rmoe/core/format.h"
#include "rmoe/core/h5.h"
#include "rmoe/train/checkpoint.h"

using namespace rmoe;

namespace {

constexpr int kExitDiffer = 3;

const char* kUsage =
    "usage: rmoe_ckpt info FILE|DIR   header, configuration, tensors with shapes and norms\n"
    "       rmoe_ckpt diff A B        per-tensor max |a - b| of two checkpoints\n"
    "exit status: 0 ok (diff: identical), 1 bad file, 2 bad usage, 3 (diff) the checkpoints differ\n";

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A whole tensor as float; every chunk's checksum is verified by the read.
std::vector<float> read_tensor(const h5::File& f, const std::string& name, std::vector<int64_t>* shape) {
  *shape = f.shape(name);
  std::vector<float> v(size_t(numel(*shape)));
  if (shape->empty()) return f.read<float>(name);
  h5::read_rows(f, name, 0, (*shape)[0], v.data());
  return v;
}

// A directory means its newest checkpoint.
std::string checkpoint_path(const std::string& arg) {
  if (!std::filesystem::is_directory(arg)) return arg;
  const std::string latest = find_latest_checkpoint(arg);
  if (latest.empty()) throw Error("'" + arg + "' is a directory without checkpoints (ckpt_<step>.h5)");
  return latest;
}

int info(const std::string& arg) {
  const std::string path = checkpoint_path(arg);
  const CheckpointHeader h = read_checkpoint_header(path);
  const double mb = double(std::filesystem::file_size(path)) / 1e6;
  std::printf("checkpoint   %s (%.1f MB)\n", path.c_str(), mb);
  std::printf("format       rmoe-checkpoint version %lld\n", (long long)h.version);
  std::printf("step         %lld (training steps completed, %lld of them skipped: %lld AdamW updates)\n",
              (long long)h.step, (long long)h.skipped_steps, (long long)(h.step - h.skipped_steps));
  std::printf("tokens       %lld consumed\n", (long long)h.consumed_tokens);
  std::printf("seed         %llu (data order and randomness are functions of seed and step)\n",
              (unsigned long long)h.seed);
  if (h.skipped_steps > 0)
    std::printf("skipped      %lld step(s) had a non-finite loss or gradient and no update, the last %lld in a row\n",
                (long long)h.skipped_steps, (long long)h.skipped_in_a_row);
  std::printf("run          %s\n", h.run_id.empty() ? "(no run id: written before run ids)" : h.run_id.c_str());
  std::printf("tokenizer    %s\n", h.tokenizer_fingerprint.empty()
                                       ? "(not recorded: written before tokenizer fingerprints)"
                                       : (h.tokenizer + " [" + h.tokenizer_fingerprint + "]").c_str());
  std::printf("experts      %lld (saved with %lld rank(s), expert-parallel size %lld; loads into any layout)\n",
              (long long)h.num_experts, (long long)h.saved_world_size, (long long)h.saved_expert_parallel_size);
  std::printf("configuration:\n");
  for (size_t pos = 0; pos < h.config_ini.size();) {
    size_t end = h.config_ini.find('\n', pos);
    if (end == std::string::npos) end = h.config_ini.size();
    if (h.config_ini[pos] != '#') std::printf("  %s\n", h.config_ini.substr(pos, end - pos).c_str());
    pos = end + 1;
  }
  h5::File f(path, h5::File::readonly);
  const std::vector<std::string> names = h5::list_datasets(f);
  size_t width = 6;
  for (const auto& n : names) width = std::max(width, n.size());
  std::printf("tensors (float32; expert tensors [E, ...]):\n  %-*s  %-18s %12s %14s %12s\n", int(width), "name",
              "shape", "elements", "L2 norm", "max |x|");
  int64_t model_values = 0, all_values = 0, bad_values = 0, bad_tensors = 0;
  std::string first_bad;
  for (const auto& name : names) {
    std::vector<int64_t> shape;
    const std::vector<float> v = read_tensor(f, name, &shape);
    double sq = 0, mx = 0;
    int64_t nonfinite = 0;
    for (float x : v) {
      if (!std::isfinite(x)) {
        ++nonfinite;
        continue;
      }
      sq += double(x) * x;
      mx = std::max(mx, double(std::fabs(x)));
    }
    std::printf("  %-*s  %-18s %12lld %14.6g %12.6g", int(width), name.c_str(), shape_text(shape).c_str(),
                (long long)v.size(), std::sqrt(sq), mx);
    if (nonfinite) {
      std::printf("  (%lld non-finite!)", (long long)nonfinite);
      bad_values += nonfinite;
      if (bad_tensors++ == 0) first_bad = name;
    }
    std::printf("\n");
    all_values += int64_t(v.size());
    if (name.rfind("/model/", 0) == 0) model_values += int64_t(v.size());
  }
  std::printf("total        %lld parameters, %lld values in %zu tensors; all checksums verified\n",
              (long long)model_values, (long long)all_values, names.size());
  if (bad_values > 0)
    throw Error("checkpoint '" + path + "' holds " + std::to_string(bad_values) + " non-finite value(s) in " +
                std::to_string(bad_tensors) + " tensor(s), the first in '" + first_bad +
                "'; it can be neither resumed from nor evaluated: use an older checkpoint");
  return 0;
}

int diff(const std::string& arg_a, const std::string& arg_b) {
  const std::string pa = checkpoint_path(arg_a), pb = checkpoint_path(arg_b);
  const CheckpointHeader ha = read_checkpoint_header(pa), hb = read_checkpoint_header(pb);
  std::string scalars_differing;  // "step, seed"
  std::printf("A = %s\nB = %s\n", pa.c_str(), pb.c_str());
  auto scalar = [&](const char* what, unsigned long long a, unsigned long long b) {
    if (a != b) {
      std::printf("%-16s A %llu, B %llu\n", what, a, b);
      scalars_differing += (scalars_differing.empty() ? "" : ", ") + std::string(what);
    }
  };
  scalar("step", (unsigned long long)ha.step, (unsigned long long)hb.step);
  scalar("consumed_tokens", (unsigned long long)ha.consumed_tokens, (unsigned long long)hb.consumed_tokens);
  scalar("seed", ha.seed, hb.seed);
  const auto config = config_differences(ha.config_ini, hb.config_ini);
  if (!config.empty()) {
    std::printf("configuration differences (A -> B; informational):\n");
    for (const auto& line : config) std::printf("  %s\n", line.c_str());
  }
  h5::File fa(pa, h5::File::readonly), fb(pb, h5::File::readonly);
  const auto na = h5::list_datasets(fa), nb = h5::list_datasets(fb);
  std::set<std::string> all(na.begin(), na.end());
  all.insert(nb.begin(), nb.end());
  const std::set<std::string> in_a(na.begin(), na.end()), in_b(nb.begin(), nb.end());
  size_t width = 6;
  for (const auto& n : all) width = std::max(width, n.size());
  std::printf("  %-*s  %-18s %14s %12s\n", int(width), "tensor", "shape", "max |a - b|", "differing");
  int64_t tensors_differing = 0;
  double worst = 0;
  std::string worst_name;
  for (const auto& name : all) {
    if (!in_a.count(name) || !in_b.count(name)) {
      std::printf("  %-*s  only in %s\n", int(width), name.c_str(), in_a.count(name) ? "A" : "B");
      ++tensors_differing;
      continue;
    }
    std::vector<int64_t> sa, sb;
    const std::vector<float> a = read_tensor(fa, name, &sa), b = read_tensor(fb, name, &sb);
    if (sa != sb) {
      std::printf("  %-*s  shape %s in A, %s in B\n", int(width), name.c_str(), shape_text(sa).c_str(),
                  shape_text(sb).c_str());
      ++tensors_differing;
      continue;
    }
    double mx = 0;
    int64_t count = 0;
    for (size_t i = 0; i < a.size(); ++i)
      if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {  // bitwise: NaN == NaN, 0 != -0
        ++count;
        const double d = std::fabs(double(a[i]) - double(b[i]));
        mx = std::isnan(d) ? INFINITY : std::max(mx, d);
      }
    std::printf("  %-*s  %-18s %14.6g %12lld\n", int(width), name.c_str(), shape_text(sa).c_str(), mx,
                (long long)count);
    if (count) {
      ++tensors_differing;
      if (mx >= worst) {
        worst = mx;
        worst_name = name;
      }
    }
  }
  if (scalars_differing.empty() && tensors_differing == 0) {
    std::printf("identical: %zu tensors, step, tokens and seed are bit-identical\n", all.size());
    return 0;
  }
  std::printf("DIFFERENT: %s%lld of %zu tensors differ",
              scalars_differing.empty() ? "" : (scalars_differing + " differ; ").c_str(),
              (long long)tensors_differing, all.size());
  if (!worst_name.empty()) std::printf(" (largest max |a - b| %.6g in %s)", worst, worst_name.c_str());
  std::printf("\n");
  return kExitDiffer;
}

int run(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const bool ok = (args.size() == 2 && args[0] == "info") || (args.size() == 3 && args[0] == "diff");
  if (!ok) {  // the reason, then the usage (without its last newline: app_main adds one)
    const std::string usage(kUsage, std::strlen(kUsage) - 1);
    throw UsageError((args.empty() ? "missing command" : "bad arguments for '" + args[0] + "'") + "\n" + usage);
  }
  return args[0] == "info" ? info(args[1]) : diff(args[1], args[2]);
}

}  // namespace

int main(int argc, char** argv) { return rmoe::app_main("rmoe_ckpt", argc, argv, run); }
