// test_checkpoint.cpp — HDF5 checkpoints (include/rmoe/train/checkpoint.h) and
// stop signals (include/rmoe/train/signals.h), in one process:
//   - save/load round trip of parameters, AdamW moments and scalars, bit-exact,
//     and the file layout (/model, /optimizer/exp_avg{,_sq}, [E, ...], Fletcher32);
//   - loading an expert slice of another layout gives exactly those rows;
//   - a run saved after N steps and resumed equals the straight 2N-step run;
//   - find_latest / resolve_load_path / keep-K, which never deletes another
//     run's files; other runs' checkpoints in a directory; the write probe;
//   - non-finite values: never saved, refused on load, rmoe_ckpt info exits 1;
//   - what a resume compares: model-shaping options and the tokenizer refused,
//     other changes reported; tokenizer fingerprints;
//   - truncated, bit-flipped, foreign, mismatched and missing files: a clear
//     error, and no file changes;
//   - SIGKILL of a writer at random moments: every complete checkpoint loads;
//   - SIGUSR1 / SIGTERM: the flag, and a child that saves and exits with
//     exit_status_requeue.
// Layouts with several ranks: tests/mpi_test_checkpoint.cpp.
// The medium-config timing runs only with RMOE_CKPT_BENCH=1 (see MediumConfigSaveLoadSpeed).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"
#include "rmoe/core/rng.h"
#include "rmoe/core/timer.h"
#include "rmoe/train/adamw.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/config.h"
#include "rmoe/train/signals.h"
#include "checkpoint_test_util.h"

namespace rmoe {
namespace {

namespace fs = std::filesystem;
using namespace testutil;

// The state of `seed` for experts [first, first + local) (local < 0: all).
OwnedState make_state(const ModelConfig& cfg, uint64_t seed, int first = 0, int local = -1) {
  OwnedState o{ParamStore<float>(model_param_specs(cfg, first, local)), {}, {}, {}, {}};
  const auto& specs = o.params.specs();
  fill(o.params.replicated(), specs, false, seed, first);
  fill(o.params.expert(), specs, true, seed, first);
  o.m_rep.resize(o.params.replicated().size());
  o.v_rep.resize(o.params.replicated().size());
  o.m_exp.resize(o.params.expert().size());
  o.v_exp.resize(o.params.expert().size());
  fill(o.m_rep, specs, false, seed + 1, first);
  fill(o.m_exp, specs, true, seed + 1, first);
  fill(o.v_rep, specs, false, seed + 2, first);
  fill(o.v_exp, specs, true, seed + 2, first);
  return o;
}

ProcessGroups one_process(int num_experts) { return make_process_groups(make_self_comm(), 0, num_experts); }

// A process that holds experts [first, first + local) of ep_size * local, as
// EP-rank first / local of a group (built by hand; only load may use it).
ProcessGroups expert_slice(int first, int local, int ep_size) {
  ProcessGroups g;
  g.world = make_self_comm();
  g.ep = make_self_comm();
  g.edp = make_self_comm();
  g.ep_size = ep_size;
  g.first_local_expert = first;
  g.num_local_experts = local;
  return g;
}

// Directories of this run, removed at the end when every test passed (kept
// for inspection otherwise).
std::vector<std::string>& test_dirs() {
  static std::vector<std::string> dirs;
  return dirs;
}
struct RemoveTestDirs : ::testing::Environment {
  void TearDown() override {
    if (::testing::UnitTest::GetInstance()->Passed())
      for (const auto& d : test_dirs()) fs::remove_all(d);
  }
};
[[maybe_unused]] ::testing::Environment* const remove_test_dirs =
    ::testing::AddGlobalTestEnvironment(new RemoveTestDirs);

// A fresh directory for one test.
std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("rmoe_ckpt_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  test_dirs().push_back(dir.string());
  return dir.string();
}

// Every file of dir with its bytes, to show that nothing was changed.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    out[e.path().filename().string()] = std::string(std::istreambuf_iterator<char>(in), {});
  }
  return out;
}

std::string save_state(const std::string& dir, OwnedState& o, int64_t step, int keep = 0) {
  TrainState s = o.view();
  s.step = step;
  s.consumed_tokens = step * 1000;
  s.seed = 77;
  s.config_ini = "# test\nstep = " + std::to_string(step) + "\n";
  int experts = 1;
  for (const ParamSpec& spec : o.params.specs())
    if (spec.expert) experts = int(spec.shape[0]);
  return save_checkpoint(dir, s, one_process(experts), keep);
}

// Loading `path` into `into` must throw rmoe::Error (UsageError when `usage`)
// whose message contains every part.
void expect_load_error(const std::string& path, OwnedState& into, const ProcessGroups& g,
                       const std::vector<std::string>& parts, bool usage = false) {
  TrainState s = into.view();
  auto expect_parts = [&](const std::string& msg) {
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nmissing: " << p;
  };
  try {
    load_checkpoint(path, s, g);
    ADD_FAILURE() << "no error loading " << path;
  } catch (const UsageError& e) {
    EXPECT_TRUE(usage) << "UsageError for a damaged file: " << e.what();
    expect_parts(e.what());
  } catch (const Error& e) {
    EXPECT_FALSE(usage) << "expected a UsageError: " << e.what();
    expect_parts(e.what());
  }
}

// The file offset of the chunk of `dataset` that holds element `coord`.
int64_t chunk_address(const std::string& path, const std::string& dataset, std::vector<hsize_t> coord) {
  h5::File f(path, h5::File::readonly);
  const hid_t ds = H5Dopen2(f.id(), dataset.c_str(), H5P_DEFAULT);
  unsigned mask = 0;
  haddr_t addr = 0;
  hsize_t size = 0;
  const herr_t rc = H5Dget_chunk_info_by_coord(ds, coord.data(), &mask, &addr, &size);
  H5Dclose(ds);
  EXPECT_GE(rc, 0);
  return int64_t(addr);
}

// Overwrites element `index` of `dataset` with `value` through HDF5 itself, so
// the chunk's checksum stays valid: a file as an older build could write it.
void poke_value(const std::string& path, const std::string& dataset, int64_t index, float value) {
  std::vector<float> v;
  {
    h5::File f(path, h5::File::readonly);
    v = f.read<float>(dataset);
  }
  v[size_t(index)] = value;
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  const hid_t ds = H5Dopen2(file, dataset.c_str(), H5P_DEFAULT);
  ASSERT_GE(ds, 0);
  EXPECT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), 0);
  H5Dclose(ds);
  H5Fclose(file);
}

// Runs a shell command; its exit status and its output (stdout and stderr).
int run_command(const std::string& cmd, std::string* output) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  output->clear();
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) output->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void flip_byte(const std::string& path, int64_t offset, unsigned char mask = 0x10) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.read(&c, 1);
  c = char(c ^ mask);
  f.seekp(offset);
  f.write(&c, 1);
}

// ---- round trip and layout ---------------------------------------------------

TEST(Checkpoint, RoundTripIsBitExact) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("roundtrip");
  OwnedState saved = make_state(cfg, 11);
  TrainState s = saved.view();
  s.step = 42;
  s.consumed_tokens = 123456789012345;
  s.seed = 18446744073709551615ull;
  s.config_ini = config_to_ini(TrainConfig{});
  const std::string path = save_checkpoint(dir, s, one_process(4), 3);
  EXPECT_EQ(path, (fs::path(dir) / "ckpt_00000042.h5").string());
  EXPECT_EQ(fs::directory_iterator(dir)->path().string(), path);  // no temporary left

  OwnedState loaded = zero_state(cfg);
  TrainState l = loaded.view();
  load_checkpoint(path, l, one_process(4));
  EXPECT_TRUE(same_state(saved, loaded));
  EXPECT_EQ(l.step, 42);
  EXPECT_EQ(l.consumed_tokens, 123456789012345);
  EXPECT_EQ(l.seed, 18446744073709551615ull);
  EXPECT_EQ(l.config_ini, s.config_ini);
  EXPECT_EQ(l.skipped_steps, 0);
  EXPECT_EQ(l.run_id, "");

  // The attributes a resume checks come back as written.
  s.skipped_steps = 5;
  s.skipped_in_a_row = 2;
  s.run_id = "0123456789abcdef";
  s.tokenizer_fingerprint = "byte:abc:256";
  s.tokenizer = "byte (vocabulary 256, end-of-document id 0)";
  const std::string with_ids = save_checkpoint(dir, s, one_process(4), 0);
  load_checkpoint(with_ids, l, one_process(4));
  EXPECT_EQ(l.skipped_steps, 5);
  EXPECT_EQ(l.skipped_in_a_row, 2);
  EXPECT_EQ(l.run_id, "0123456789abcdef");
  EXPECT_EQ(l.tokenizer_fingerprint, "byte:abc:256");
  EXPECT_EQ(l.tokenizer, s.tokenizer);
  const CheckpointHeader hdr = read_checkpoint_header(with_ids);
  EXPECT_EQ(hdr.skipped_steps, 5);
  EXPECT_EQ(hdr.run_id, "0123456789abcdef");
  EXPECT_EQ(hdr.tokenizer_fingerprint, "byte:abc:256");
  s.skipped_steps = s.skipped_in_a_row = 0;
  s.run_id = s.tokenizer_fingerprint = s.tokenizer = "";

  // Empty moment vectors are sized; a null m_rep skips the optimizer state.
  OwnedState sized = zero_state(cfg);
  sized.m_rep.clear();
  sized.v_exp.clear();
  TrainState z = sized.view();
  load_checkpoint(path, z, one_process(4));
  EXPECT_TRUE(same_state(saved, sized));
  ParamStore<float> only_params(model_param_specs(cfg));
  TrainState p;
  p.params = &only_params;
  load_checkpoint(path, p, one_process(4));
  EXPECT_TRUE(same_bits(only_params.replicated(), saved.params.replicated()));
  EXPECT_TRUE(same_bits(only_params.expert(), saved.params.expert()));

  // The layout include/train/rmoe/train/checkpoint.h promises.
  h5::File f(path, h5::File::readonly);
  EXPECT_EQ(f.attr_string("format"), "rmoe-checkpoint");
  EXPECT_EQ(f.attr_int("version"), 1);
  EXPECT_EQ(f.attr_int("num_experts"), 4);
  EXPECT_EQ(f.shape("/model/embed/wte"), (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(f.shape("/model/layers/01/experts/w2"), (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(f.shape("/optimizer/exp_avg/layers/00/experts/w1"), (std::vector<int64_t>{4, 8, 16}));
  EXPECT_EQ(f.shape("/optimizer/exp_avg_sq/router/cell/w_ih"), (std::vector<int64_t>{24, 8}));
  const auto names = h5::list_datasets(f);
  EXPECT_EQ(names.size(), 3 * saved.params.specs().size());
  for (const auto& n : names) EXPECT_TRUE(f.info(n).fletcher32) << n;
  const std::vector<float> w2 = f.read<float>("/model/layers/01/experts/w2");
  const float* mine = saved.params.data_of(*saved.params.find("layers/01/experts/w2"));
  EXPECT_EQ(std::memcmp(w2.data(), mine, w2.size() * sizeof(float)), 0);

  // A configuration text past HDF5's 64 KiB compact-attribute limit, and an empty one.
  for (const std::string& ini : {std::string(100000, 'x'), std::string()}) {
    s.config_ini = ini;
    load_checkpoint(save_checkpoint(dir, s, one_process(4), 0), l, one_process(4));
    EXPECT_EQ(l.config_ini, ini);
  }
}

// The random router's frozen gates are saved and loaded like every tensor.
TEST(Checkpoint, RandomRouterRoundTrip) {
  ModelConfig cfg = tiny_model();
  cfg.router_type = RouterType::random;
  const std::string dir = fresh_dir("random_router");
  OwnedState saved = make_state(cfg, 12);
  const std::string path = save_state(dir, saved, 3);
  OwnedState loaded = zero_state(cfg);
  TrainState l = loaded.view();
  load_checkpoint(path, l, one_process(4));
  EXPECT_TRUE(same_state(saved, loaded));
  EXPECT_NE(loaded.params.get("layers/01/router/gate_w").data[0], 0.0f);
}

// The cosine routers' tensors (expert_emb, log_scale, xmoe_proj) are saved
// and loaded like every tensor; another --xmoe-dim is a shape mismatch naming
// the tensor.
TEST(Checkpoint, CosineRoutersRoundTrip) {
  for (RouterType r : {RouterType::cosine, RouterType::xmoe, RouterType::gru_xmoe}) {
    SCOPED_TRACE(router_type_name(r));
    ModelConfig cfg = tiny_model();
    cfg.router_type = r;
    cfg.xmoe_dim = 6;
    const std::string dir = fresh_dir(std::string("cosine_router_") + router_type_name(r));
    OwnedState saved = make_state(cfg, 13);
    const std::string path = save_state(dir, saved, 3);
    OwnedState loaded = zero_state(cfg);
    TrainState l = loaded.view();
    load_checkpoint(path, l, one_process(4));
    EXPECT_TRUE(same_state(saved, loaded));
    EXPECT_NE(loaded.params.get("layers/01/router/log_scale").data[0], 0.0f);
    EXPECT_NE(loaded.params.get("layers/01/router/expert_emb").data[0], 0.0f);
    if (r == RouterType::cosine) continue;
    ModelConfig wider = cfg;
    wider.xmoe_dim = 7;
    OwnedState into = zero_state(wider);
    const std::string in = r == RouterType::xmoe ? "16" : "8";  // xmoe_proj [r, d] or [r, p]
    expect_load_error(path, into, one_process(4),
                      {"'/model/layers/00/router/xmoe_proj'", "[6, " + in + "] in the file", "[7, " + in + "]"},
                      /*usage=*/true);
  }
}

// The router ablations of the paper (docs/MODEL.md): a checkpoint saved with
// one holds its tensors and its options; what it stores parses back to the
// same model, resuming with it changes nothing, and resuming without it is
// refused as a model change.
void expect_ablation_round_trip(const ModelConfig& cfg, const std::string& key, const std::string& name) {
  SCOPED_TRACE(name);
  TrainConfig tc;
  tc.model = cfg;
  tc.lr_decay_iters = tc.resolved_lr_decay_iters();
  const std::string dir = fresh_dir(name);
  OwnedState saved = make_state(cfg, 21);
  TrainState s = saved.view();
  s.step = 4;
  s.seed = 77;
  s.config_ini = config_to_ini(tc);
  const std::string path = save_checkpoint(dir, s, one_process(cfg.num_experts), 0);
  OwnedState loaded = zero_state(cfg);
  TrainState l = loaded.view();
  load_checkpoint(path, l, one_process(cfg.num_experts));
  EXPECT_TRUE(same_state(saved, loaded));
  const TrainConfig back = parse_train_config_from_ini(l.config_ini, path, {});
  EXPECT_EQ(config_to_ini(back), config_to_ini(tc));
  EXPECT_EQ(model_param_specs(back.model).size(), model_param_specs(cfg).size());
  EXPECT_TRUE(compare_for_resume(l, config_to_ini(back), "", "").refused.empty());
  TrainConfig plain = tc;
  plain.model = tiny_model();
  const ResumeChanges without = compare_for_resume(l, config_to_ini(plain), "", "");
  ASSERT_FALSE(without.refused.empty());
  bool named = false;
  for (const auto& c : without.refused) named = named || c.key == key;
  EXPECT_TRUE(named) << key;
}

TEST(Checkpoint, LstmRouterRoundTrip) {
  ModelConfig cfg = tiny_model();
  cfg.router_type = RouterType::lstm;
  expect_ablation_round_trip(cfg, "moe-router-type", "lstm_router");
  OwnedState st = make_state(cfg, 3);
  EXPECT_EQ(st.params.find("router/cell/w_ih")->shape, (std::vector<int64_t>{4 * 8, 8}));  // [4p, p]
}

TEST(Checkpoint, SharedProjectionRoundTrip) {
  ModelConfig cfg = tiny_model();
  cfg.router_shared_proj = true;
  expect_ablation_round_trip(cfg, "router-shared-proj", "shared_proj");
  OwnedState st = make_state(cfg, 3);
  EXPECT_EQ(st.params.find("router/proj_w")->shape, (std::vector<int64_t>{8, 16}));  // [p, d]
  EXPECT_EQ(st.params.find("layers/00/router/proj_w"), nullptr);
}

TEST(Checkpoint, LogitResidualRoundTrip) {
  ModelConfig cfg = tiny_model();
  cfg.router_logit_residual = 0.375;
  expect_ablation_round_trip(cfg, "router-logit-residual", "logit_residual");
  cfg.router_logit_residual_detach = true;
  expect_ablation_round_trip(cfg, "router-logit-residual-detach", "logit_residual_detach");
}

TEST(Checkpoint, LoadsAnExpertSliceOfAnotherLayout) {
  const ModelConfig cfg = tiny_model();  // E = 4
  const std::string dir = fresh_dir("slice");
  OwnedState whole = make_state(cfg, 5);
  const std::string path = save_state(dir, whole, 3);
  for (int ep : {1, 2, 4}) {
    const int local = 4 / ep;
    for (int first = 0; first < 4; first += local) {
      OwnedState slice = zero_state(cfg, first, local);
      TrainState s = slice.view();
      load_checkpoint(path, s, expert_slice(first, local, ep));
      OwnedState expected = make_state(cfg, 5, first, local);  // the same rows of the whole
      EXPECT_TRUE(same_state(slice, expected)) << "EP " << ep << " experts from " << first;
      EXPECT_EQ(s.step, 3);
    }
  }
}

// ---- resume equals a straight run ------------------------------------------------

TEST(Checkpoint, ResumeEqualsStraightRun) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("resume");
  const int n = 5;
  OwnedState straight = zero_state(cfg);
  fill(straight.params.replicated(), straight.params.specs(), false, 3, 0);
  fill(straight.params.expert(), straight.params.specs(), true, 3, 0);
  OwnedState first_half = straight;
  TrainState a = straight.view();
  a.seed = 9;
  for (int i = 0; i < 2 * n; ++i) toy_step(a, 0);

  TrainState b = first_half.view();
  b.seed = 9;
  for (int i = 0; i < n; ++i) toy_step(b, 0);
  save_checkpoint(dir, b, one_process(4), 0);
  OwnedState resumed = make_state(cfg, 1234);  // other values everywhere: all must come from the file
  TrainState r = resumed.view();
  load_checkpoint(find_latest_checkpoint(dir), r, one_process(4));
  EXPECT_EQ(r.step, n);
  EXPECT_EQ(r.seed, 9u);
  for (int i = 0; i < n; ++i) toy_step(r, 0);
  EXPECT_EQ(r.step, a.step);
  EXPECT_EQ(r.consumed_tokens, a.consumed_tokens);
  EXPECT_TRUE(same_state(straight, resumed));
}

// ---- directory handling ----------------------------------------------------------

TEST(Checkpoint, FindLatestIgnoresTemporaryFilesAndPicksTheHighestStep) {
  const std::string dir = fresh_dir("latest");
  EXPECT_EQ(find_latest_checkpoint(dir), "");
  EXPECT_EQ(find_latest_checkpoint(dir + "/missing"), "");
  for (const char* name : {"ckpt_00000005.h5", "ckpt_00000100.h5", "ckpt_00000020.h5", "ckpt_00000200.h5.tmp",
                           "ckpt_999.h5", "ckpt_0000000x.h5", "other.h5", "ckpt_00000300.h5~"})
    std::ofstream(fs::path(dir) / name) << "x";
  fs::create_directory(fs::path(dir) / "ckpt_00000400.h5");  // a directory is no checkpoint
  EXPECT_EQ(find_latest_checkpoint(dir), (fs::path(dir) / "ckpt_00000100.h5").string());
  std::ofstream(fs::path(dir) / "ckpt_100000000.h5") << "x";  // 9 digits past step 99999999
  EXPECT_EQ(find_latest_checkpoint(dir), (fs::path(dir) / "ckpt_100000000.h5").string());
  EXPECT_EQ(checkpoint_file_name(7), "ckpt_00000007.h5");
  EXPECT_EQ(checkpoint_file_name(123456789), "ckpt_123456789.h5");

  // What --load names.
  EXPECT_EQ(resolve_load_path(""), "");
  EXPECT_EQ(resolve_load_path(dir), (fs::path(dir) / "ckpt_100000000.h5").string());
  const std::string file = (fs::path(dir) / "ckpt_00000005.h5").string();
  EXPECT_EQ(resolve_load_path(file), file);
  EXPECT_EQ(resolve_load_path(fresh_dir("latest_empty")), "");  // empty directory: start fresh
  EXPECT_EQ(resolve_load_path(dir + "/not_yet"), "");           // a --save directory not created yet
  EXPECT_THROW(resolve_load_path(dir + "/ckpt_00000006.h5"), UsageError);
}

TEST(Checkpoint, KeepDeletesAllButTheNewestK) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("keep");
  OwnedState o = make_state(cfg, 1);
  std::ofstream(fs::path(dir) / "ckpt_00000001.h5.tmp") << "left by a writer that was killed";
  for (int step = 1; step <= 5; ++step) save_state(dir, o, step, 2);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt_00000004.h5", "ckpt_00000005.h5"}));
  // Saving an older step never deletes the file just written.
  save_state(dir, o, 3, 1);
  EXPECT_TRUE(fs::exists(fs::path(dir) / "ckpt_00000003.h5"));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "ckpt_00000005.h5"));
  // keep = 0 keeps everything.
  for (int step = 6; step <= 8; ++step) save_state(dir, o, step, 0);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 5);
}

// Run B saving into a directory that holds run A's checkpoints 5 and 10 (keep
// 2) must leave both: keep-K deletes only files of its own run. (Before run
// ids, B's save of step 6 deleted A's checkpoint 5.)
TEST(Checkpoint, KeepNeverDeletesAnotherRunsCheckpoints) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("keep_runs");
  OwnedState o = make_state(cfg, 1);
  auto save_as = [&](const std::string& run, int64_t step) {
    TrainState s = o.view();
    s.step = step;
    s.run_id = run;
    return save_checkpoint(dir, s, one_process(4), 2);
  };
  save_as("aaaaaaaaaaaaaaaa", 5);
  save_as("aaaaaaaaaaaaaaaa", 10);
  for (int64_t step : {1, 2, 3, 6}) save_as("bbbbbbbbbbbbbbbb", step);
  auto names = [&] {
    std::vector<std::string> n;
    for (const auto& e : fs::directory_iterator(dir)) n.push_back(e.path().filename().string());
    std::sort(n.begin(), n.end());
    return n;
  };
  EXPECT_EQ(names(), (std::vector<std::string>{"ckpt_00000003.h5", "ckpt_00000005.h5", "ckpt_00000006.h5",
                                               "ckpt_00000010.h5"}))
      << "run B's keep-K deleted run A's checkpoints, or kept too many of its own";
  EXPECT_EQ(read_checkpoint_header(dir + "/ckpt_00000005.h5").run_id, "aaaaaaaaaaaaaaaa");
  // Nor does a save replace another run's file of the same step.
  try {
    save_as("bbbbbbbbbbbbbbbb", 5);
    ADD_FAILURE() << "run B overwrote run A's checkpoint 5";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("belongs to run aaaaaaaaaaaaaaaa"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_checkpoint_header(dir + "/ckpt_00000005.h5").run_id, "aaaaaaaaaaaaaaaa");
  EXPECT_EQ(names().size(), 4u);  // no temporary file left

  // Who else wrote into dir.
  EXPECT_EQ(checkpoints_of_other_runs(dir, "aaaaaaaaaaaaaaaa", false),
            (std::vector<std::string>{"ckpt_00000003.h5 (run bbbbbbbbbbbbbbbb)",
                                      "ckpt_00000006.h5 (run bbbbbbbbbbbbbbbb)"}));
  EXPECT_EQ(checkpoints_of_other_runs(dir, "cccccccccccccccc", false).size(), 4u);
  EXPECT_TRUE(checkpoints_of_other_runs(dir + "/missing", "x", true).empty());
  const std::string legacy = fresh_dir("keep_legacy");
  save_state(legacy, o, 3);  // no run id, as files written before run ids
  EXPECT_TRUE(checkpoints_of_other_runs(legacy, "aaaaaaaaaaaaaaaa", false).empty());
  EXPECT_EQ(checkpoints_of_other_runs(legacy, "aaaaaaaaaaaaaaaa", true),
            (std::vector<std::string>{"ckpt_00000003.h5 (no run id)"}));

  const std::string id = new_run_id();
  EXPECT_EQ(id.size(), 16u);
  EXPECT_NE(id, new_run_id());
}

TEST(Checkpoint, ProbeFindsAnUnwritableDirectory) {
  const std::string dir = fresh_dir("probe");
  EXPECT_NO_THROW(probe_checkpoint_dir(dir + "/a/b"));  // created, parents too
  EXPECT_TRUE(fs::is_directory(dir + "/a/b"));
  EXPECT_TRUE(fs::is_empty(dir + "/a/b"));  // the probe file is gone
  std::ofstream(dir + "/file") << "x";
  EXPECT_THROW(probe_checkpoint_dir(dir + "/file/ckpt"), Error);  // a file where a directory should be
  EXPECT_THROW(probe_checkpoint_dir(dir + "/file"), Error);
}

// ---- non-finite values ---------------------------------------------------------------

// A state with a NaN or an infinity anywhere (parameters, either moment,
// replicated or expert) is never written: the save throws naming the first
// bad tensor and the count, before any file (or directory) exists.
TEST(CheckpointNonFinite, SaveRefusesAndWritesNothing) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("nonfinite_save");
  OwnedState good = make_state(cfg, 6);
  const std::string kept = save_state(dir, good, 1);
  const auto before = snapshot(dir);
  struct Case {
    std::vector<float>* (*buffer)(OwnedState&);
    const char* tensor;
    float value;
  };
  const std::vector<Case> cases = {
      {[](OwnedState& o) { return &o.params.replicated(); }, "'/model/embed/wte'", NAN},
      {[](OwnedState& o) { return &o.params.expert(); }, "'/model/layers/00/experts/w1'", INFINITY},
      {[](OwnedState& o) { return &o.m_rep; }, "'/optimizer/exp_avg/embed/wte'", -INFINITY},
      {[](OwnedState& o) { return &o.v_exp; }, "'/optimizer/exp_avg_sq/layers/00/experts/w1'", NAN},
  };
  for (const Case& c : cases) {
    OwnedState bad = make_state(cfg, 6);
    std::vector<float>& buf = *c.buffer(bad);
    buf[0] = c.value;
    buf[1] = c.value;
    for (const std::string& where : {dir, dir + "/not_created"}) {
      try {
        save_state(where, bad, 2);
        ADD_FAILURE() << "saved a state with non-finite values in " << c.tensor;
      } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("refusing to save step 2"), std::string::npos) << msg;
        EXPECT_NE(msg.find("2 non-finite value(s) in 1 tensor(s), the first in " + std::string(c.tensor)),
                  std::string::npos)
            << msg;
      }
    }
    EXPECT_FALSE(fs::exists(dir + "/not_created"));
    EXPECT_EQ(snapshot(dir), before);
    const NonFiniteReport r = find_non_finite(bad.view(), true);
    EXPECT_EQ(r.values, 2);
    EXPECT_EQ(r.tensors, 1);
  }
  EXPECT_EQ(find_non_finite(good.view(), true).values, 0);
  EXPECT_EQ(find_latest_checkpoint(dir), kept);
}

// A file holding a NaN (written by an older build, or by hand) is refused on
// load with an error naming the file and the tensor, and rmoe_ckpt info
// reports it and exits 1 (it used to flag it and exit 0).
TEST(CheckpointNonFinite, LoadAndInfoRefuseAPoisonedFile) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("nonfinite_load");
  OwnedState o = make_state(cfg, 7);
  save_state(dir, o, 4);
  const std::string path = save_state(dir, o, 5);
  poke_value(path, "/optimizer/exp_avg_sq/layers/01/experts/w2", 3, NAN);
  OwnedState into = zero_state(cfg);
  expect_load_error(path, into, one_process(4),
                    {"checkpoint '" + path + "' holds 1 non-finite value(s)",
                     "'/optimizer/exp_avg_sq/layers/01/experts/w2'", "use an older checkpoint"});
  // Evaluation reads only /model: a NaN among the moments does not stop it; one among the parameters does.
  ParamStore<float> params(model_param_specs(cfg));
  TrainState p;
  p.params = &params;
  EXPECT_NO_THROW(load_checkpoint(path, p, one_process(4)));
  poke_value(path, "/model/layers/00/experts/w1", 0, INFINITY);
  OwnedState into2 = zero_state(cfg);
  expect_load_error(path, into2, one_process(4), {"'/model/layers/00/experts/w1'"});

  const std::string ckpt_tool = std::string(RMOE_BINARY_DIR) + "/rmoe_ckpt";
  ASSERT_TRUE(fs::exists(ckpt_tool)) << "build rmoe_ckpt first";
  std::string out;
  EXPECT_EQ(run_command(ckpt_tool + " info " + path, &out), 1) << out;
  EXPECT_NE(out.find("non-finite"), std::string::npos) << out;
  EXPECT_NE(out.find(path), std::string::npos) << out;
  EXPECT_EQ(run_command(ckpt_tool + " info " + dir, &out), 1) << out;  // the newest: the poisoned one
  EXPECT_EQ(run_command(ckpt_tool + " info " + dir + "/ckpt_00000004.h5", &out), 0) << out;
}

// ---- what a resume compares ----------------------------------------------------------

TEST(CheckpointResume, ModelShapingChangesAreRefusedOthersReported) {
  TrainConfig a;
  a.model = tiny_model();
  a.lr_decay_iters = a.resolved_lr_decay_iters();
  TrainState saved;
  saved.config_ini = config_to_ini(a);
  saved.tokenizer_fingerprint = "synthetic:markov:seed=1234:vocab=32";
  saved.tokenizer = "synthetic:markov (seed 1234, vocabulary 32)";
  auto compare = [&](const TrainConfig& b, const std::string& fp = "synthetic:markov:seed=1234:vocab=32") {
    return compare_for_resume(saved, config_to_ini(b), fp, "now");
  };
  auto keys = [](const std::vector<ConfigChange>& v) {
    std::vector<std::string> k;
    for (const auto& c : v) k.push_back(c.key);
    return k;
  };
  ResumeChanges same = compare(a);
  EXPECT_TRUE(same.refused.empty());
  EXPECT_TRUE(same.reported.empty());

  TrainConfig b = a;  // every model-shaping option changed
  b.model.num_layers = 3;
  b.model.hidden_size = 24;
  b.model.ffn_hidden_size = 12;
  b.model.num_heads = 3;
  b.model.vocab_size = 64;
  b.model.num_experts = 8;
  b.model.topk = 1;
  b.model.router_type = RouterType::linear;
  b.model.router_dim = 4;
  b.model.router_detach = true;
  b.model.tie_embeddings = true;
  b.model.init_std = 0.01;
  b.model.router_init = RouterInit::torch;
  b.model.router_shared_proj = true;
  b.model.router_logit_residual = 0.5;
  b.model.router_logit_residual_detach = true;
  b.seed = 99;
  b.model.xmoe_dim = 8;
  ResumeChanges r = compare(b);
  std::vector<std::string> refused = keys(r.refused);
  std::sort(refused.begin(), refused.end());
  std::vector<std::string> all = model_shaping_options();
  std::sort(all.begin(), all.end());
  EXPECT_EQ(refused, all);
  EXPECT_TRUE(r.reported.empty()) << r.reported.front().key;
  for (const auto& c : r.refused)
    if (c.key == "moe-router-topk") {
      EXPECT_EQ(c.from, "2");
      EXPECT_EQ(c.to, "1");
    }

  TrainConfig c = a;  // what may change on resume
  c.lr = 5e-3;
  c.global_batch_size = 16;
  c.model.seq_length = 8;
  c.model.aux_loss_coeff = 0.02;
  c.train_iters = 300;
  c.save = "elsewhere";
  c.data_path = "data/other";
  ResumeChanges q = compare(c);
  EXPECT_TRUE(q.refused.empty()) << q.refused.front().key;
  std::vector<std::string> reported = keys(q.reported);
  for (const char* k : {"lr", "global-batch-size", "seq-length", "moe-aux-loss-coeff", "train-iters", "save",
                        "data-path"})
    EXPECT_NE(std::find(reported.begin(), reported.end(), k), reported.end()) << k;

  // Another tokenizer: refused like a model change; a file without a fingerprint: not checked.
  ResumeChanges t = compare(a, "byte:cbf29ce484222325:32");
  ASSERT_EQ(t.refused.size(), 1u);
  EXPECT_EQ(t.refused[0].key, "tokenizer");
  EXPECT_NE(t.refused[0].from.find("synthetic:markov:seed=1234:vocab=32"), std::string::npos);
  EXPECT_NE(t.refused[0].to.find("byte:cbf29ce484222325:32"), std::string::npos);
  saved.tokenizer_fingerprint.clear();
  EXPECT_TRUE(compare(a, "byte:cbf29ce484222325:32").refused.empty());
}

// A checkpoint older than --router-init has no such key: it was initialised
// the default way, so resuming with the default is no model change; torch is.
TEST(CheckpointResume, OptionNewerThanTheCheckpointMeansItsDefault) {
  TrainConfig a;
  a.model = tiny_model();
  a.lr_decay_iters = a.resolved_lr_decay_iters();
  TrainState saved;
  saved.config_ini = config_to_ini(a);
  const std::string line = "router-init = normal\n";
  const size_t at = saved.config_ini.find(line);
  ASSERT_NE(at, std::string::npos) << saved.config_ini;
  saved.config_ini.erase(at, line.size());
  ResumeChanges same = compare_for_resume(saved, config_to_ini(a), "", "");
  EXPECT_TRUE(same.refused.empty()) << same.refused.front().key;
  ASSERT_EQ(same.reported.size(), 1u);
  EXPECT_EQ(same.reported[0].key, "router-init");
  EXPECT_EQ(same.reported[0].from, "(none)");
  TrainConfig b = a;
  b.model.router_init = RouterInit::torch;
  ResumeChanges torch = compare_for_resume(saved, config_to_ini(b), "", "");
  ASSERT_EQ(torch.refused.size(), 1u);
  EXPECT_EQ(torch.refused[0].key, "router-init");
}

TEST(CheckpointResume, TokenizerFingerprints) {
  const auto byte = make_byte_tokenizer();
  const std::string fp = tokenizer_fingerprint_of(*byte);
  EXPECT_EQ(fp.rfind("byte:", 0), 0u) << fp;
  EXPECT_NE(fp.find(":256"), std::string::npos) << fp;
  EXPECT_EQ(fp, tokenizer_fingerprint_of(*make_byte_tokenizer()));
  const auto syn = open_batch_source("synthetic:markov", 32, 11);
  EXPECT_EQ(tokenizer_fingerprint_of(*syn, "synthetic:markov", 11), "synthetic:markov:seed=11:vocab=32");
  EXPECT_NE(tokenizer_fingerprint_of(*syn, "synthetic:markov", 11), synthetic_tokenizer_fingerprint("synthetic:markov", 12, 32));
}

// ---- damaged, foreign and mismatched files -------------------------------------

TEST(CheckpointErrors, DamagedAndForeignFilesGiveClearErrorsAndChangeNothing) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("damaged");
  OwnedState o = make_state(cfg, 2);
  const std::string good = save_state(dir, o, 10);
  const auto copy_as = [&](const std::string& name) {
    const std::string p = (fs::path(dir) / name).string();
    fs::copy_file(good, p);
    return p;
  };
  const int64_t size = int64_t(fs::file_size(good));
  // Truncated at several points.
  std::vector<std::string> truncated;
  for (int64_t keep : {int64_t(0), int64_t(100), size / 2, size - 100}) {
    const std::string p = copy_as("truncated_" + std::to_string(keep) + ".h5");
    fs::resize_file(p, uint64_t(keep));
    truncated.push_back(p);
  }
  // One flipped bit inside a data chunk: expert 3 of layer 1's w2.
  const std::string flipped = copy_as("flipped.h5");
  flip_byte(flipped, chunk_address(flipped, "/model/layers/01/experts/w2", {3, 0, 0}) + 40);
  // An HDF5 file that is no checkpoint, a text file, a future version.
  const std::string foreign = (fs::path(dir) / "foreign.h5").string();
  {
    h5::File f(foreign, h5::File::truncate);
    const float x[2] = {1, 2};
    f.write("/tokens", x, {2});
  }
  const std::string text = (fs::path(dir) / "text.h5").string();
  std::ofstream(text) << "not an HDF5 file\n";
  const std::string future = (fs::path(dir) / "future.h5").string();
  {
    h5::File f(future, h5::File::truncate);
    f.set_attr("format", std::string("rmoe-checkpoint"));
    f.set_attr("version", int64_t(2));
  }
  const auto before = snapshot(dir);

  OwnedState into = zero_state(cfg);
  const ProcessGroups g = one_process(4);
  for (const auto& p : truncated) expect_load_error(p, into, g, {"checkpoint '" + p + "'", "older checkpoint"});
  expect_load_error(flipped, into, g, {"checkpoint '" + flipped + "' is corrupt", "/model/layers/01/experts/w2",
                                       "checksum"});
  // The expert slice without the flipped expert still loads (each rank checks what it reads).
  OwnedState low = zero_state(cfg, 0, 2);
  TrainState ls = low.view();
  EXPECT_NO_THROW(load_checkpoint(flipped, ls, expert_slice(0, 2, 2)));
  OwnedState high = zero_state(cfg, 2, 2);
  expect_load_error(flipped, high, expert_slice(2, 2, 2), {"checksum"});
  expect_load_error(foreign, into, g, {"'" + foreign + "' is not an rmoe checkpoint"});
  expect_load_error(text, into, g, {"checkpoint '" + text + "' cannot be opened"});
  expect_load_error(future, into, g, {"version 2", "reads version 1"});
  expect_load_error(dir + "/missing.h5", into, g, {"'" + dir + "/missing.h5' does not exist"});
  expect_load_error(dir, into, g, {"is a directory"});
  EXPECT_THROW(read_checkpoint_header(flipped.substr(0, flipped.size() - 3)), Error);
  EXPECT_EQ(snapshot(dir), before);  // nothing written, nothing removed

  // A save that cannot write leaves nothing behind and says why.
  const std::string blocked = (fs::path(dir) / "blocked").string();
  std::ofstream(blocked) << "a file where the directory should be";
  TrainState s = o.view();
  try {
    save_checkpoint(blocked, s, g, 0);
    ADD_FAILURE() << "saving into a file succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("saving checkpoint '" + blocked), std::string::npos) << e.what();
  }
}

// Any single flipped byte anywhere in the file: the load fails with an Error,
// or (a byte HDF5 never reads) gives exactly the saved state. Never wrong values.
TEST(CheckpointErrors, NoFlippedByteIsReadSilently) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("flips");
  OwnedState o = make_state(cfg, 4);
  const std::string good = save_state(dir, o, 1);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes(std::istreambuf_iterator<char>(in), {});
  const std::string path = (fs::path(dir) / "flip.h5").string();
  std::mt19937 rng(123);
  int detected = 0, harmless = 0, silent = 0;
  for (int trial = 0; trial < 600; ++trial) {
    // Half the trials in the first 8 KiB, where most metadata lives.
    const size_t pos = trial % 2 ? rng() % std::min<size_t>(bytes.size(), 8192) : rng() % bytes.size();
    std::string damaged = bytes;
    damaged[pos] = char(damaged[pos] ^ (1 << (rng() % 8)));
    std::ofstream(path, std::ios::binary | std::ios::trunc) << damaged;
    OwnedState into = zero_state(cfg);
    TrainState s = into.view();
    try {
      load_checkpoint(path, s, one_process(4));
      if (same_state(into, o) && s.step == 1 && s.seed == 77 && s.consumed_tokens == 1000 &&
          s.config_ini == "# test\nstep = 1\n") {
        ++harmless;
      } else {
        ++silent;
        ADD_FAILURE() << "byte " << pos << " flipped: loaded without error but different";
      }
    } catch (const Error&) {
      ++detected;
    }
  }
  std::printf("flipped bytes: %d detected, %d harmless (unused bytes), %d silent\n", detected, harmless, silent);
  EXPECT_EQ(silent, 0);
  EXPECT_GT(detected, 300);
}

TEST(CheckpointErrors, ModelMismatchNamesTheTensorAndBothShapes) {
  const ModelConfig cfg = tiny_model();
  const std::string dir = fresh_dir("mismatch");
  OwnedState o = make_state(cfg, 3);
  const std::string path = save_state(dir, o, 1);
  const auto before = snapshot(dir);
  auto expect_mismatch = [&](ModelConfig other, const std::vector<std::string>& parts) {
    OwnedState into = zero_state(other);
    expect_load_error(path, into, one_process(other.num_experts), parts, /*usage=*/true);
  };
  ModelConfig ffn = cfg;
  ffn.ffn_hidden_size = 12;
  expect_mismatch(ffn,
                  {"'/model/layers/00/experts/w1'", "[4, 8, 16] in the file", "[4, 12, 16] in this configuration"});
  ModelConfig experts = cfg;
  experts.num_experts = 8;
  expect_mismatch(experts, {"'/model/layers/00/router/gate_w'", "[4, 8] in the file", "[8, 8]"});
  ModelConfig width = cfg;
  width.hidden_size = 32;
  expect_mismatch(width, {"'/model/embed/wte'", "[32, 16] in the file", "[32, 32] in this configuration"});
  ModelConfig linear = cfg;
  linear.router_type = RouterType::linear;  // no GRU cell; gate_w [E, d]
  expect_mismatch(linear, {"'/model/layers/00/router/gate_w'", "[4, 8] in the file", "[4, 16]"});
  ModelConfig tied = cfg;
  tied.tie_embeddings = true;  // the file's /model/head is extra
  expect_mismatch(tied, {"tensor '/model/head' [32, 16]", "this configuration does not"});
  // Saved with a linear router, loaded as GRU: the cell is missing.
  const std::string lin_dir = fresh_dir("mismatch_linear");
  OwnedState lin = make_state(linear, 3);
  const std::string lin_path = save_state(lin_dir, lin, 1);
  OwnedState gru = zero_state(cfg);
  expect_load_error(lin_path, gru, one_process(4), {"has no tensor '/model/router/cell/w_ih' [24, 8]"}, true);
  EXPECT_EQ(snapshot(dir), before);
}

// ---- crash safety -------------------------------------------------------------

// A writer saving steps last+1, last+2, ... forever (keep 3), killed with
// SIGKILL at a random moment, 30 times. After every kill each complete
// checkpoint loads and holds exactly the state saved for its step, and the
// newest never goes back.
TEST(CheckpointCrash, KillingTheWriterAtAnyMomentLeavesLoadableCheckpoints) {
  ModelConfig cfg = tiny_model();
  cfg.hidden_size = 64;  // ~1.5 MB files: a save takes long enough to be hit mid-write
  cfg.ffn_hidden_size = 64;
  cfg.num_heads = 4;
  const std::string dir = fresh_dir("crash");
  auto state_of = [&](int64_t step) { return make_state(cfg, 1000 + uint64_t(step)); };
  const auto t0 = Clock::now();
  OwnedState first = state_of(0);
  save_state(dir, first, 0, 3);
  const double save_us = 1e6 * seconds_since(t0);

  std::mt19937 rng(2024);
  int64_t newest = 0;
  int kills_mid_write = 0;
  for (int kill_no = 0; kill_no < 30; ++kill_no) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // the writer: never returns into the test framework
      try {
        for (int64_t step = newest + 1;; ++step) {
          OwnedState o = state_of(step);
          save_state(dir, o, step, 3);
        }
      } catch (...) {
      }
      _exit(1);
    }
    // Between no complete save and about four (each iteration is state_of + save).
    const auto delay = std::chrono::microseconds(int64_t(save_us * 4.0 * (rng() % 1000) / 1000.0));
    std::this_thread::sleep_for(delay);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the writer failed by itself";
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".tmp") ++kills_mid_write;

    const std::string latest = find_latest_checkpoint(dir);
    ASSERT_FALSE(latest.empty());
    int complete = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() != ".h5") continue;
      ++complete;
      OwnedState loaded = zero_state(cfg);
      TrainState s = loaded.view();
      ASSERT_NO_THROW(load_checkpoint(e.path().string(), s, one_process(4))) << e.path();
      OwnedState expected = state_of(s.step);
      EXPECT_TRUE(same_state(loaded, expected)) << e.path();
      EXPECT_EQ(e.path().filename().string(), checkpoint_file_name(s.step));
      if (e.path().string() == latest) {
        EXPECT_GE(s.step, newest);
        newest = s.step;
      }
    }
    EXPECT_LE(complete, 4);  // keep 3, plus one written but not yet pruned
  }
  std::printf("save takes %.0f us; %d of 30 kills left a partial file; reached step %lld\n", save_us,
              kills_mid_write, (long long)newest);
  EXPECT_GT(newest, 0);
}

// ---- signals --------------------------------------------------------------------

TEST(Signals, RaiseSetsTheFlag) {
  install_stop_signal_handlers();
  clear_stop_request();
  EXPECT_FALSE(stop_requested());
  EXPECT_EQ(stop_signal(), 0);
  std::raise(SIGUSR1);
  EXPECT_TRUE(stop_requested());
  EXPECT_EQ(stop_signal(), SIGUSR1);
  std::raise(SIGTERM);  // the first signal is the one reported
  EXPECT_EQ(stop_signal(), SIGUSR1);
  auto self = make_self_comm();
  EXPECT_TRUE(stop_requested_any(*self));
  clear_stop_request();
  EXPECT_FALSE(stop_requested_any(*self));
  std::raise(SIGTERM);
  EXPECT_EQ(stop_signal(), SIGTERM);
  clear_stop_request();
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) std::signal(sig, SIG_DFL);  // a test runner may need to stop us
}

// What rmoe_train does on a signal, in a child: keep stepping until a stop is
// requested, save, exit with exit_status_requeue. (Forked children here never
// use OpenMP: libgomp's thread pool does not survive fork.)
TEST(Signals, SignalLeadsToCheckpointAndRequeueStatus) {
  const ModelConfig cfg = tiny_model();
  for (int sig : {SIGUSR1, SIGTERM}) {
    const std::string dir = fresh_dir("signal_" + std::to_string(sig));
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int status = exit_status_failure;
      try {
        install_stop_signal_handlers();
        clear_stop_request();
        OwnedState o = make_state(cfg, 8);
        TrainState s = o.view();
        s.seed = 8;
        auto world = make_self_comm();
        const char go = 1;
        if (write(ready[1], &go, 1) != 1) _exit(exit_status_failure);
        while (!stop_requested_any(*world)) {  // the training loop (no OpenMP: this is a forked child)
          o.params.replicated()[0] += 1.f;
          ++s.step;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        save_checkpoint(dir, s, one_process(4), 3);
        status = exit_status_requeue;
      } catch (...) {
      }
      _exit(status);
    }
    char go = 0;
    ASSERT_EQ(read(ready[0], &go, 1), 1);
    close(ready[0]);
    close(ready[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    EXPECT_EQ(WEXITSTATUS(status), exit_status_requeue);
    const std::string latest = find_latest_checkpoint(dir);
    ASSERT_FALSE(latest.empty());
    OwnedState loaded = zero_state(cfg);
    TrainState s = loaded.view();
    load_checkpoint(latest, s, one_process(4));
    EXPECT_GT(s.step, 0);
    EXPECT_EQ(s.seed, 8u);
  }
}

// ---- speed (opt-in) ---------------------------------------------------------------

// RMOE_CKPT_BENCH=1 tests/test_checkpoint --gtest_filter='*Speed*'
// The paper's character-level medium model (docs/MODEL.md): save (write, fsync,
// rename) and load, warm (file in the page cache) and cold (evicted first).
TEST(CheckpointBench, MediumConfigSaveLoadSpeed) {
  if (!std::getenv("RMOE_CKPT_BENCH")) GTEST_SKIP() << "set RMOE_CKPT_BENCH=1 to measure";
  ModelConfig cfg;
  cfg.num_layers = 8;
  cfg.hidden_size = 352;
  cfg.num_heads = 8;
  cfg.num_experts = 16;
  cfg.topk = 2;
  cfg.ffn_hidden_size = 352;
  cfg.router_dim = 128;
  cfg.router_type = RouterType::gru;
  cfg.vocab_size = 256;
  cfg.seq_length = 512;
  const std::string dir = std::getenv("RMOE_CKPT_BENCH_DIR") ? std::getenv("RMOE_CKPT_BENCH_DIR") : fresh_dir("bench");
  OwnedState o = zero_state(cfg);  // values do not matter for speed (no compression): cheap ones
  for (std::vector<float>* buf : {&o.params.replicated(), &o.params.expert(), &o.m_rep, &o.v_rep, &o.m_exp, &o.v_exp})
    for (size_t i = 0; i < buf->size(); ++i) (*buf)[i] = float(i % 4093) * 1e-3f;
  OwnedState into = zero_state(cfg);
  auto cpu_seconds = [](std::clock_t c) { return double(std::clock() - c) / CLOCKS_PER_SEC; };
  for (int rep = 0; rep < 3; ++rep) {
    auto t = Clock::now();
    auto c = std::clock();
    const std::string path = save_state(dir, o, rep, 1);
    const double save_s = seconds_since(t), save_cpu = cpu_seconds(c);
    const double mb = double(fs::file_size(path)) / 1e6;
    TrainState s = into.view();
    t = Clock::now();
    c = std::clock();
    load_checkpoint(path, s, one_process(16));
    const double warm_s = seconds_since(t), warm_cpu = cpu_seconds(c);
    const int fd = open(path.c_str(), O_RDONLY);  // evict the file from the page cache
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    t = Clock::now();
    load_checkpoint(path, s, one_process(16));
    const double cold_s = seconds_since(t);
    EXPECT_TRUE(same_state(o, into));
    if (rep == 2) fs::remove(path);
    std::printf("medium checkpoint %.1f MB (%.1fM params + 2 moments): save %.2f s = %.0f MB/s (CPU %.2f s), "
                "load warm %.2f s = %.0f MB/s (CPU %.2f s), load cold %.2f s = %.0f MB/s\n",
                mb, double(o.params.replicated().size() + o.params.expert().size()) / 1e6, save_s, mb / save_s,
                save_cpu, warm_s, mb / warm_s, warm_cpu, cold_s, mb / cold_s);
  }
}

}  // namespace
}  // namespace rmoe
