// checkpoint.h — HDF5 training checkpoints (docs/DATA.md, docs/ARCHITECTURE.md): save, find the
// newest complete one, load into any valid rank layout (resharding), and what
// a resume checks (configuration, tokenizer, run id).
//
// One file per saved step, DIR/ckpt_<step, 8 or more digits>.h5:
//   /model/<name>                 float32  the parameters, names and shapes of docs/MODEL.md;
//                                          expert tensors [E, ...], the expert index first,
//                                          so the file does not depend on P or EP
//   /optimizer/exp_avg/<name>     float32  AdamW first moment m, same name and shape
//   /optimizer/exp_avg_sq/<name>  float32  AdamW second moment v, same name and shape
//   root attributes: format = "rmoe-checkpoint", version = 1, step (training
//   steps completed, skipped ones included), consumed_tokens (the running sum
//   of every step's global batch x sequence length), seed (uint64; the data
//   order and every random draw are functions of (seed, step), so these two
//   are the whole data-loader and RNG state), skipped_steps and
//   skipped_in_a_row (steps whose loss or gradient norm was not finite, so no
//   AdamW update was applied: AdamW's bias correction counts step -
//   skipped_steps updates), run_id (drawn when a run first starts, kept by
//   every resume), tokenizer_fingerprint and tokenizer (what the token ids
//   mean: tokenizer_fingerprint_of below), num_experts, config (the resolved
//   INI, readable by rmoe_train --config), saved_world_size,
//   saved_expert_parallel_size, description (this layout in words).
//   Files written before skipped_steps, run_id and the tokenizer attributes
//   existed read them as 0 and "" (unknown).
// `h5ls -r FILE`, `h5dump -A FILE` and `rmoe_ckpt info FILE` show it all.
//
// Integrity: every dataset is chunked with HDF5's Fletcher32 checksum filter
// and the file uses HDF5's checksummed metadata format, so a flipped bit or a
// truncated file is reported on load (an rmoe::Error naming the file) rather
// than read silently. No non-finite value is ever written: save_checkpoint
// refuses a state with a NaN or an infinity (before creating any file), and
// load_checkpoint refuses a file that holds one (an older build could write
// them).
//
// Crash safety: world rank 0 writes DIR/ckpt_<step>.h5.tmp, flushes and
// fsyncs it, renames it to DIR/ckpt_<step>.h5 (atomic), fsyncs DIR, and only
// then deletes old checkpoints of the same run. A crash at any moment leaves
// the previous checkpoint intact; find_latest_checkpoint ignores *.tmp files
// and the next save removes them.
//
// Errors under MPI: save and load are collective over groups.world and all
// ranks agree on the outcome: if any rank fails, every rank throws the message
// of the lowest failing rank (no rank is left waiting in a collective).
//
// Tested by tests/test_checkpoint.cpp (round trip, expert slices, latest and
// keep-K, other runs' files, non-finite states and files, corrupt/truncated/
// mismatched files, SIGKILL during save, signals, save-resume equals straight
// run, configuration changes) and tests/mpi_test_checkpoint.cpp (save at
// P = 1, 2, 4 with every valid EP, load at every other layout).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rmoe/data/batch_source.h"
#include "rmoe/data/tokenizer.h"
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
  int64_t step = 0;                     // training steps completed (skipped ones included)
  int64_t consumed_tokens = 0;          // sum over the steps of global batch x sequence length
  uint64_t seed = 0;                    // data order / RNG state is fully (seed, step)
  std::string config_ini;               // config_to_ini(cfg)
  int64_t skipped_steps = 0;            // steps without an AdamW update (non-finite loss or gradient)
  int64_t skipped_in_a_row = 0;         // of them, the latest run of consecutive ones (0: the last step was applied)
  std::string run_id;                   // new_run_id() at a run's first start, kept by every resume
  std::string tokenizer_fingerprint;    // tokenizer_fingerprint_of(...); "" = unknown (old file)
  std::string tokenizer;                // the same in words, for messages
};

// "ckpt_00000100.h5" for step 100 (more digits past 99999999).
std::string checkpoint_file_name(int64_t step);

// Collective over groups.world. First every rank checks that all its values
// (parameters and both moments, one pass) are finite; if not, every rank
// throws rmoe::Error naming the step, the first non-finite tensor and the
// count, and nothing is created. Expert tensors (and their moments) are
// gathered over groups.ep (EP-rank q holds global experts [q*E_local,
// (q+1)*E_local), as make_process_groups lays them out) and world rank 0
// writes DIR/ckpt_<step>.h5 as described above, creating DIR if needed. Then
// it deletes all but the newest `keep` checkpoints of DIR by step among those
// whose run_id equals s.run_id (keep <= 0: keep all; the file just written is
// never deleted; another run's files, and files whose run id cannot be read,
// are never deleted). Returns the path written (on every rank). Needs every
// moment pointer set.
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
// verifies checksums (Error naming the file), then that every value read is
// finite (Error naming the file, the first non-finite tensor and the count:
// such a file cannot be resumed from or evaluated). Fills s: params, the
// moments (skipped when s.m_rep is null, e.g. for evaluation; resized if
// empty), step, consumed_tokens, seed, config_ini, skipped_steps,
// skipped_in_a_row, run_id, tokenizer_fingerprint, tokenizer. On an error *s
// is partly overwritten: the caller should stop. Never writes to the file.
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
  int64_t skipped_steps = 0, skipped_in_a_row = 0;
  std::string run_id;                 // "" in files written before run ids
  std::string tokenizer_fingerprint;  // "" in files written before tokenizer fingerprints
  std::string tokenizer;
};
CheckpointHeader read_checkpoint_header(const std::string& path);  // throws Error naming the file

// One option whose value differs between two config_to_ini texts; a key
// missing on one side has the value "(none)".
struct ConfigChange {
  std::string key, from, to;
};
// The differing options in the order of `a` (then those only in `b`).
std::vector<ConfigChange> config_changes(const std::string& ini_a, const std::string& ini_b);
// The same as lines ("lr: 0.001 -> 0.0007"). For rmoe_ckpt diff.
std::vector<std::string> config_differences(const std::string& ini_a, const std::string& ini_b);

// The INI keys (flag names without dashes) that shape the model: its
// parameter names and shapes, or the function it computes, or how its weights
// came to be (seed, init). A resume that changes one of them is refused
// (docs/DATA.md, "What a resume checks"); every other change is reported.
const std::vector<std::string>& model_shaping_options();
bool is_model_shaping_option(const std::string& key);

// What a resume compares. `saved` is the checkpoint's, `now` this run's.
// Model-shaping changes (and a tokenizer change, as the pseudo-option
// "tokenizer") go to `refused`, every other change to `reported`.
struct ResumeChanges {
  std::vector<ConfigChange> refused, reported;
};
ResumeChanges compare_for_resume(const TrainState& saved, const std::string& now_ini,
                                 const std::string& now_tokenizer_fingerprint, const std::string& now_tokenizer);

// What the token ids of a data source mean, as stored in a checkpoint. For a
// tokenizer (a dataset's): "<name>:<Tokenizer::fingerprint()>:<vocab>", the
// hash covering the tokenizer's name and stored blob (the SentencePiece
// model); e.g. "byte:cbf29ce484222325:256". For synthetic:NAME data:
// "synthetic:NAME:seed=<seed>:vocab=<V>" (the chain depends on both).
// tokenizer_description_of is the same in words.
std::string tokenizer_fingerprint_of(const Tokenizer& tok);
std::string synthetic_tokenizer_fingerprint(const std::string& data_path, uint64_t seed, int vocab_size);
// A BatchSource of open_batch_source(data_path, ..., seed, ...): the dataset's
// tokenizer, or the synthetic fingerprint.
std::string tokenizer_fingerprint_of(const BatchSource& source, const std::string& data_path, uint64_t seed);
std::string tokenizer_description_of(const BatchSource& source, const std::string& data_path, uint64_t seed);

// A fresh random run id (16 hex digits from std::random_device, the time and
// the process id).
std::string new_run_id();

// The complete checkpoints of `dir` that another run wrote: file names with
// their run id in words ("ckpt_00000010.h5 (run 3f2a...)"). A file whose run
// id is empty (written before run ids) or cannot be read counts as another
// run's only when `unknown_is_foreign`. Empty when dir does not exist.
std::vector<std::string> checkpoints_of_other_runs(const std::string& dir, const std::string& run_id,
                                                   bool unknown_is_foreign);

// Makes sure checkpoints can be written into `dir`: creates it (and its
// parents), writes, fsyncs and removes a probe file. Throws rmoe::Error with
// the reason otherwise.
void probe_checkpoint_dir(const std::string& dir);

// Non-finite values of a state: how many, in how many tensors, and the first
// tensor holding one ("/model/<name>", "/optimizer/exp_avg/<name>", ...).
// Moments are checked when with_moments (all four pointers must be set).
struct NonFiniteReport {
  int64_t values = 0, tensors = 0;
  std::string first_tensor;
};
NonFiniteReport find_non_finite(const TrainState& s, bool with_moments);

}  // namespace rmoe
