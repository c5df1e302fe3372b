// mpi_test_checkpoint.cpp — checkpoints across rank layouts, under mpiexec
// -n 1, 2, 4 (linked with tests/mpi_main.cpp):
//   - a checkpoint saved at any layout (P <= ranks, every valid EP) has the
//     same contents, and loads at every layout into exactly the rows a
//     one-process state of the same seed holds (parameters and moments);
//   - N steps at one layout, save, load at another, N more steps equals a
//     straight 2N-step run;
//   - a flipped bit only one rank reads, or a model mismatch, makes every rank
//     throw the same error (no hang);
//   - a non-finite value in one rank's experts only: every rank's save throws,
//     naming the tensor, and no file is written;
//   - a stop signal on one rank is seen by all (stop_requested_any).
// Every rank reaches every collective; failures are counted and all-reduced
// before anyone asserts. E = 4 experts, so EP in {1, 2, 4} where it divides P.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>

#include "rmoe/parallel/comm.h"
#include "rmoe/core/error.h"
#include "rmoe/core/h5.h"
#include "rmoe/core/rng.h"
#include "rmoe/train/adamw.h"
#include "rmoe/train/checkpoint.h"
#include "rmoe/train/signals.h"
#include "checkpoint_test_util.h"

using namespace rmoe;
using namespace rmoe::testutil;

namespace {

namespace fs = std::filesystem;

constexpr int kExperts = 4;

// The layout of experts [first, first + local) of tiny_model(), all zeros.
OwnedState zero_state(int first, int local) { return testutil::zero_state(tiny_model(), first, local); }

// Parameters from ParamStore::init (slice-consistent by construction), moments
// from fill; the second moment v made non-negative, as AdamW's is (a negative
// v makes toy_step's sqrt NaN, which a save refuses).
OwnedState make_state(uint64_t seed, int first, int local) {
  OwnedState o = zero_state(first, local);
  o.params.init(seed, 0.02, first);
  const auto& specs = o.params.specs();
  fill(o.m_rep, specs, false, seed + 1, first);
  fill(o.m_exp, specs, true, seed + 1, first);
  fill(o.v_rep, specs, false, seed + 2, first);
  fill(o.v_exp, specs, true, seed + 2, first);
  for (std::vector<float>* v : {&o.v_rep, &o.v_exp})
    for (float& x : *v) x = std::fabs(x);
  return o;
}

struct Layout {
  int P, EP;
};

// Every (P, EP) with P <= world size, P in {1, 2, 4}, EP dividing P and E.
std::vector<Layout> layouts(int world_size) {
  std::vector<Layout> out;
  for (int P : {1, 2, 4})
    if (P <= world_size)
      for (int ep = 1; ep <= P; ++ep)
        if (P % ep == 0 && kExperts % ep == 0) out.push_back({P, ep});
  return out;
}

// Runs body(groups) on world ranks [0, P) as a P-rank job with the given EP;
// the other ranks only take part in the split. Exceptions count as failures.
// Collective over world.
void on_layout(Comm& world, Layout l, int64_t& failures, const std::function<void(ProcessGroups&)>& body) {
  const bool member = world.rank() < l.P;
  std::unique_ptr<Comm> sub = world.split(member ? 0 : 1, world.rank());
  if (member) {
    try {
      ProcessGroups g = make_process_groups(std::move(sub), l.EP, kExperts);
      body(g);
    } catch (const std::exception& e) {
      ++failures;
      ADD_FAILURE() << "P=" << l.P << " EP=" << l.EP << ": " << e.what();
    }
  }
  world.barrier();
}

// A directory every rank agrees on (rank 0's pid), fresh.
std::string shared_dir(Comm& world, const std::string& name) {
  int64_t pid = getpid();
  world.broadcast(&pid, sizeof pid, 0);
  const std::string dir =
      (fs::path(::testing::TempDir()) / ("rmoe_mpi_ckpt_" + name + "_" + std::to_string(pid))).string();
  if (world.rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  world.barrier();
  return dir;
}

// Removes a shared_dir once every rank is done with it (kept when a test failed).
void remove_shared_dir(Comm& world, const std::string& dir) {
  world.barrier();
  if (world.rank() == 0 && !::testing::Test::HasFailure()) fs::remove_all(dir);
}

int64_t total(Comm& world, int64_t local) {
  world.allreduce_sum(&local, 1);
  return local;
}

}  // namespace

TEST(CheckpointMpi, SaveAtAnyLayoutLoadsAtEveryLayout) {
  auto world = mpi_world();
  const uint64_t seed = 31;
  const std::string dir = shared_dir(*world, "reshard");
  int64_t failures = 0, wrong = 0;
  std::string reference;  // the file saved at P = 1 (rank 0 knows it)
  for (Layout save : layouts(world->size())) {
    const std::string sub_dir = dir + "/P" + std::to_string(save.P) + "_EP" + std::to_string(save.EP);
    on_layout(*world, save, failures, [&](ProcessGroups& g) {
      OwnedState o = make_state(seed, g.first_local_expert, g.num_local_experts);
      TrainState s = o.view();
      s.step = 17;
      s.consumed_tokens = 17 * 4096;
      s.seed = seed;
      s.config_ini = "num-experts = 4\n";
      save_checkpoint(sub_dir, s, g, 2);
    });
    const std::string path = sub_dir + "/" + checkpoint_file_name(17);
    if (save.P == 1) reference = path;
    // The file does not depend on the layout it was saved from.
    if (world->rank() == 0) {
      h5::File a(reference, h5::File::readonly), b(path, h5::File::readonly);
      const auto names = h5::list_datasets(a);
      EXPECT_EQ(names, h5::list_datasets(b));
      for (const auto& n : names)
        if (a.read<float>(n) != b.read<float>(n)) {
          ++wrong;
          ADD_FAILURE() << n << " differs between " << reference << " and " << path;
        }
      EXPECT_EQ(b.attr_int("saved_world_size"), save.P);
      EXPECT_EQ(b.attr_int("saved_expert_parallel_size"), save.EP);
    }
    for (Layout load : layouts(world->size()))
      on_layout(*world, load, failures, [&](ProcessGroups& g) {
        OwnedState got = zero_state(g.first_local_expert, g.num_local_experts);
        TrainState s = got.view();
        load_checkpoint(path, s, g);
        OwnedState want = make_state(seed, g.first_local_expert, g.num_local_experts);
        const int64_t bad = mismatches(got, want);
        wrong += bad + (s.step != 17) + (s.seed != seed) + (s.consumed_tokens != 17 * 4096);
        EXPECT_EQ(bad, 0) << "saved at P=" << save.P << " EP=" << save.EP << ", loaded at P=" << load.P
                          << " EP=" << load.EP << " (experts from " << g.first_local_expert << ")";
      });
  }
  EXPECT_EQ(total(*world, failures), 0);
  EXPECT_EQ(total(*world, wrong), 0);
  remove_shared_dir(*world, dir);
}

TEST(CheckpointMpi, ResumeAtAnotherLayoutEqualsStraightRun) {
  auto world = mpi_world();
  const int n = 3;
  const std::string dir = shared_dir(*world, "resume");
  // The straight run, one process, all experts (every rank computes it).
  OwnedState straight = make_state(5, 0, kExperts);
  TrainState a = straight.view();
  a.seed = 5;
  for (int i = 0; i < 2 * n; ++i) toy_step(a, 0);

  int64_t failures = 0, wrong = 0;
  const auto all = layouts(world->size());
  const Layout first = all.back();  // the widest layout saves ...
  on_layout(*world, first, failures, [&](ProcessGroups& g) {
    OwnedState o = make_state(5, g.first_local_expert, g.num_local_experts);
    TrainState s = o.view();
    s.seed = 5;
    for (int i = 0; i < n; ++i) toy_step(s, g.first_local_expert);
    save_checkpoint(dir, s, g, 0);
  });
  for (Layout second : all)  // ... and every layout resumes
    on_layout(*world, second, failures, [&](ProcessGroups& g) {
      OwnedState o = zero_state(g.first_local_expert, g.num_local_experts);
      TrainState s = o.view();
      load_checkpoint(find_latest_checkpoint(dir), s, g);
      for (int i = 0; i < n; ++i) toy_step(s, g.first_local_expert);
      // The straight run's rows of this slice.
      OwnedState want = zero_state(g.first_local_expert, g.num_local_experts);
      want.params.replicated() = straight.params.replicated();
      want.m_rep = straight.m_rep;
      want.v_rep = straight.v_rep;
      const size_t per_rank = want.params.expert().size();
      for (const ParamSpec& spec : want.params.specs()) {
        if (!spec.expert) continue;
        const ParamSpec* whole = straight.params.find(spec.name);
        const int64_t rows = spec.numel() / spec.shape[0], from = whole->offset + g.first_local_expert * rows;
        for (int64_t i = 0; i < spec.numel(); ++i) {
          want.params.expert()[size_t(spec.offset + i)] = straight.params.expert()[size_t(from + i)];
          want.m_exp[size_t(spec.offset + i)] = straight.m_exp[size_t(from + i)];
          want.v_exp[size_t(spec.offset + i)] = straight.v_exp[size_t(from + i)];
        }
      }
      EXPECT_EQ(per_rank, o.params.expert().size());
      const int64_t bad = mismatches(o, want);
      wrong += bad + (s.step != 2 * n);
      EXPECT_EQ(bad, 0) << "saved at P=" << first.P << " EP=" << first.EP << ", resumed at P=" << second.P
                        << " EP=" << second.EP;
    });
  EXPECT_EQ(total(*world, failures), 0);
  EXPECT_EQ(total(*world, wrong), 0);
  remove_shared_dir(*world, dir);
}

// Expert 3's chunk is damaged: only the rank that reads expert 3 can see it,
// yet every rank throws the same message. A model mismatch is a UsageError on every rank.
TEST(CheckpointMpi, AnErrorOnOneRankIsAnErrorOnAll) {
  auto world = mpi_world();
  const std::string dir = shared_dir(*world, "errors");
  const std::string path = dir + "/" + checkpoint_file_name(1);
  const std::string damaged = dir + "/damaged.h5";
  int64_t failures = 0;
  on_layout(*world, {1, 1}, failures, [&](ProcessGroups& g) {
    OwnedState o = make_state(3, 0, kExperts);
    TrainState s = o.view();
    s.step = 1;
    save_checkpoint(dir, s, g, 0);
    fs::copy_file(path, damaged);
    haddr_t addr = 0;
    {
      h5::File f(damaged, h5::File::readonly);
      const hid_t ds = H5Dopen2(f.id(), "/model/layers/01/experts/w3", H5P_DEFAULT);
      const hsize_t coord[3] = {3, 0, 0};
      unsigned mask = 0;
      hsize_t size = 0;
      H5Dget_chunk_info_by_coord(ds, coord, &mask, &addr, &size);
      H5Dclose(ds);
    }
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(addr + 8));
    char c = 0;
    f.read(&c, 1);
    c = char(c ^ 0x01);
    f.seekp(std::streamoff(addr + 8));
    f.write(&c, 1);
  });
  const int P = world->size();
  ProcessGroups g = make_process_groups(mpi_world(), P, kExperts);  // EP = P: one rank holds expert 3
  int64_t threw = 0, usage_threw = 0;
  OwnedState o = zero_state(g.first_local_expert, g.num_local_experts);
  TrainState s = o.view();
  try {
    load_checkpoint(damaged, s, g);
  } catch (const UsageError& e) {
    ADD_FAILURE() << "a damaged file is no usage error: " << e.what();
  } catch (const Error& e) {
    ++threw;
    const std::string msg = e.what();
    EXPECT_NE(msg.find("checkpoint '" + damaged + "' is corrupt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/model/layers/01/experts/w3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("checksum"), std::string::npos) << msg;
  }
  EXPECT_EQ(total(*world, threw), P);
  // The undamaged file loads everywhere.
  EXPECT_NO_THROW(load_checkpoint(path, s, g));
  // Another model shape: UsageError on every rank.
  ModelConfig wide = tiny_model();
  wide.ffn_hidden_size = 12;
  ParamStore<float> other(model_param_specs(wide, g.first_local_expert, g.num_local_experts));
  TrainState t;
  t.params = &other;
  try {
    load_checkpoint(path, t, g);
  } catch (const UsageError& e) {
    ++usage_threw;
    EXPECT_NE(std::string(e.what()).find("[4, 8, 16] in the file"), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UsageError: " << e.what();
  }
  EXPECT_EQ(total(*world, usage_threw), P);
  EXPECT_EQ(total(*world, failures), 0);
  remove_shared_dir(*world, dir);
}

TEST(CheckpointMpi, ANonFiniteValueOnOneRankStopsEverySave) {
  auto world = mpi_world();
  const std::string dir = shared_dir(*world, "nonfinite");
  const int P = world->size();
  ProcessGroups g = make_process_groups(mpi_world(), P, kExperts);  // EP = P
  OwnedState o = make_state(5, g.first_local_expert, g.num_local_experts);
  if (world->rank() == P - 1) o.v_exp[7] = NAN;  // the last EP-rank's experts only
  TrainState s = o.view();
  s.step = 3;
  int64_t threw = 0;
  try {
    save_checkpoint(dir, s, g, 0);
  } catch (const Error& e) {
    ++threw;
    const std::string msg = e.what();
    EXPECT_NE(msg.find("refusing to save step 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'/optimizer/exp_avg_sq/layers/00/experts/w1'"), std::string::npos) << msg;
  }
  EXPECT_EQ(total(*world, threw), P);
  world->barrier();
  EXPECT_TRUE(fs::is_empty(dir)) << "a file was written";
  remove_shared_dir(*world, dir);
}

TEST(CheckpointMpi, StopSignalOnOneRankIsSeenByAll) {
  auto world = mpi_world();
  install_stop_signal_handlers();
  clear_stop_request();
  EXPECT_FALSE(stop_requested_any(*world));
  if (world->rank() == world->size() - 1) std::raise(SIGUSR1);
  EXPECT_TRUE(stop_requested_any(*world));
  clear_stop_request();
  EXPECT_FALSE(stop_requested_any(*world));
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) std::signal(sig, SIG_DFL);  // mpiexec may need to stop us
}
