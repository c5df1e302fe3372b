// checkpoint.h — HDF5 training checkpoints (DESIGN.md §5): save, find the
// newest complete one, load into any valid rank layout (resharding).
//
// One file per saved step, DIR/ckpt_<step, 8 or more digits>.h5:
//   /model/<name>                 float32  the parameters, names and shapes of docs/MODEL.md;
//                                          expert tensors [E, ...], the expert index first,
//                                          so the file does not depend on P or EP
//   /optimizer/exp_avg/<name>     float32  AdamW first moment m, same name and shape
//   /optimizer/exp_avg_sq/<name>  float32  AdamW second moment v, same name and shape
//   root attributes: format = "rmoe-checkpoint", version = 1, step (optimizer
//   steps completed), consumed_tokens, seed (uint64; the data order and every
//   random draw are functions of (seed, step), so these two are the whole
//   data-loader and RNG state), num_experts, config (the resolved INI,
//   readable by rmoe_train --config), saved_world_size,
//   saved_expert_parallel_size, description (this layout in words).
// `h5ls -r FILE`, `h5dump -A FILE` and `rmoe_ckpt info FILE` show it all.
//
// Integrity: every dataset is chunked with HDF5's Fletcher32 checksum filter
// and the file uses HDF5's checksummed metadata format, so a flipped bit or a
// truncated file is reported on load (an rmoe::Error naming the file) rather
// than read silently.
//
// Crash safety: world rank 0 writes DIR/ckpt_<step>.h5.tmp, flushes and
// fsyncs it, renames it to DIR/ckpt_<step>.h5 (atomic), fsyncs DIR, and only
// then deletes old checkpoints. A crash at any moment leaves the previous
// checkpoint intact; find_latest_checkpoint ignores *.tmp files and the next
// save removes them.
//
// Errors under MPI: save and load are collective over groups.world and all
// ranks agree on the outcome: if any rank fails, every rank throws the message
// of the lowest failing rank (no rank is left waiting in a collective).
//
// Tested by tests/test_checkpoint.cpp (round trip, expert slices, latest and
// keep-K, corrupt/truncated/mismatched files, SIGKILL during save, signals,
// save-resume equals straight run) and tests/mpi_test_checkpoint.cpp (save at
// P = 1, 2, 4 with every valid EP, load at every other layout).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rmoe/parallel/comm.h"
#include "rmoe/model/params.h"

namespace rmoe {

// What a checkpoint holds besides the configuration. The pointers are not
// owned. Moment vectors have the layout of params->replicated() / expert().
struct TrainState {
  ParamStore<float>* params = nullptr;  // values; expert tensors are this rank's slice [E_local, ...]
  std::vector<float>* m_rep = nullptr;  // AdamW m, layout of params->replicated()
  std::vector<float>* v_rep = nullptr;  // AdamW v, layout of params->replicated()
  std::vector<float>* m_exp = nullptr;  // AdamW m, layout of params->expert()
  std::vector<float>* v_exp = nullptr;  // AdamW v, layout of params->expert()
  int64_t step = 0;                     // optimizer steps completed
  int64_t consumed_tokens = 0;
  uint64_t seed = 0;                    // data order / RNG state is fully (seed, step)
  std::string config_ini;               // config_to_ini(cfg)
};

// "ckpt_00000100.h5" for step 100 (more digits past 99999999).
std::string checkpoint_file_name(int64_t step);

// Collective over groups.world. Expert tensors (and their moments) are
// gathered over groups.ep (EP-rank q holds global experts [q*E_local,
// (q+1)*E_local), as make_process_groups lays them out) and world rank 0
// writes DIR/ckpt_<step>.h5 as described above, creating DIR if needed. Then
// it deletes all but the newest `keep` checkpoints of DIR by step (keep <= 0:
// keep all; the file just written is never deleted). Returns the path written
// (on every rank). Needs every moment pointer set.
std::string save_checkpoint(const std::string& dir, const TrainState& s, const ProcessGroups& g, int keep);

// The complete checkpoint of `dir` with the highest step, or "" when there is
// none or `dir` does not exist (temporary files are ignored). Local: call it
// on every rank (or on one and broadcast) — it only lists a directory.
std::string find_latest_checkpoint(const std::string& dir);

// What --load names: a checkpoint file is returned as is; a directory gives
// its newest checkpoint, or "" (start fresh) when it has none; a path that
// does not exist gives "" too (a --save directory the first run will create),
// unless it ends in ".h5" (a missing file: UsageError).
std::string resolve_load_path(const std::string& load);

// Collective over groups.world. Every rank reads `path`: replicated tensors
// whole, its own expert rows [first_local_expert, first_local_expert +
// num_local_experts) by hyperslab, so any valid layout loads any checkpoint.
// Validates the format and version, then every tensor's presence and shape
// before reading any data (UsageError naming the first mismatching tensor and
// both shapes; also a tensor the configuration does not have), then reads and
// verifies checksums (Error naming the file). Fills s: params, the moments
// (skipped when s.m_rep is null, e.g. for evaluation; resized if empty), step,
// consumed_tokens, seed, config_ini. On an error *s is partly overwritten:
// the caller should stop. Never writes to the file.
// The global expert count is groups.ep_size * groups.num_local_experts.
void load_checkpoint(const std::string& path, TrainState& s, const ProcessGroups& g);

// The root attributes of a checkpoint, validated (format, version). For tools.
struct CheckpointHeader {
  int64_t version = 0;
  int64_t step = 0;
  int64_t consumed_tokens = 0;
  uint64_t seed = 0;
  int64_t num_experts = 0;
  int64_t saved_world_size = 0;
  int64_t saved_expert_parallel_size = 0;
  std::string config_ini;
};
CheckpointHeader read_checkpoint_header(const std::string& path);  // throws Error naming the file

// The options whose values differ between two config_to_ini texts, one line
// each ("lr: 0.001 -> 0.0007"; a key missing on one side shows as "(none)"),
// in the order of `a`. For logging what changed on resume and for rmoe_ckpt diff.
std::vector<std::string> config_differences(const std::string& ini_a, const std::string& ini_b);

}  // namespace rmoe
