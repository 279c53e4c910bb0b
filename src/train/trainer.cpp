#include "train/trainer.h"

#include "backend/factory.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/build_info.h"
#include "core/stop_signal.h"
#include "data/shard.h"
#include "data/step_loader.h"
#include "model/gpt.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/config_io.h"
#include "train/evaluate.h"
#include "train/run_dir.h"
#include "train/run_files.h"

namespace speedrun {

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
// "42s", "3m05s", "2h07m".
std::string format_eta(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t < 60) return fmt::format("{}s", t);
  if (t < 3600) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
}
std::string shard_text(const TrainShard& s) {
  return fmt::format("{} ({} tokens)", s.file, s.tokens);
}
std::string shard_list(const std::vector<TrainShard>& v) {
  std::string t;
  for (const auto& s : v) t += " " + shard_text(s);
  return t;
}
}  // namespace

Trainer::Trainer(Backend& backend, Comm& comm, TrainConfig config,
                 std::vector<std::string> train_files, std::vector<std::string> val_files)
    : be_(backend),
      local_(&backend),
      comm_(comm),
      cfg_(std::move(config)),
      train_files_(std::move(train_files)),
      val_files_(std::move(val_files)) {
  log = [](const std::string& s) { write_console(stdout, s + "\n"); };
  cfg_.validate(comm_.size());
  // The config records the precision actually used, so a resume (on any device) asks for
  // the same one instead of the new device's default.
  const Precision p = resolve_precision(be_, cfg_.dtype);
  for (PrecisionChoice named : {PrecisionChoice::FP32, PrecisionChoice::FP64, PrecisionChoice::BF16})
    if (named_precision(named) == p) cfg_.dtype = named;
}

Trainer::Trainer(Backend& backend, TrainConfig config, std::vector<std::string> train_files,
                 std::vector<std::string> val_files)
    : Trainer(backend, local_, std::move(config), std::move(train_files), std::move(val_files)) {}

// Everything one run holds, and the phases of its step loop.
class TrainingRun {
 public:
  explicit TrainingRun(Trainer& t);
  TrainResult run();

 private:
  bool validation_due(int64_t s) const {
    return val_ && (s == N_ || (c_.val_every > 0 && s % c_.val_every == 0));
  }
  void validate(int64_t s, int64_t window);
  void train_step(int64_t s, int64_t window);
  void checkpoint(int64_t done);
  void check_ranks_agree();
  void start_fresh();
  void resume();
  std::string start_weights() const;
  void open_run_dir();
  void log(const std::string& line) const {
    if (comm_.is_root()) t_.log(line);
  }
  // A mark of the trainer's watchdog while a GPU computes `what`: the host only queues the
  // work and then waits for it, so a step that never ends is a stall. On the CPU the host
  // computes it, which is never one.
  StallWatchdog::Watch watch_device(const std::string& what) const {
    if (!t_.watchdog || be_.device() == Device::CPU) return {};
    return t_.watchdog->watch(what);
  }

  // The other ranks wait in a barrier while rank 0 writes `what` (`bytes`): work done
  // elsewhere, so the watchdog's limit grows by a second per MiB (a 1 MiB/s disk). Without
  // the barrier they would wait in their next collective under the plain limit.
  void wait_for_rank0_write(const std::string& what, double bytes) const {
    if (comm_.size() == 1) return;
    StallWatchdog::Watch w;
    if (t_.watchdog && t_.watchdog->watching()) {
      const double grace_s = bytes / double(1 << 20);
      w = t_.watchdog->watch(fmt::format("rank 0 to write {} ({:.2f} MiB: {:.2f} s more allowed)",
                                         what, bytes / double(1 << 20), grace_s),
                             t_.watchdog->limit_s() + grace_s);
    }
    comm_.barrier();
  }
  double weights_bytes() const {
    double bytes = 0;
    for (int i = 0; i < params_->count(); ++i) bytes += double(params_->value(i).bytes());
    return bytes;
  }

  Trainer& t_;
  Backend& be_;
  Comm& comm_;
  TrainConfig c_;  // the trainer's, with out_dir the directory this run writes
  const int64_t N_, T_;
  std::optional<FoundCheckpoint> ck_;  // the checkpoint a resumed run continues from
  std::string init_file_;              // the weights file --init names (or its directory's)
  std::optional<RunDir> run_dir_;      // held by the writing rank while it writes
  int64_t per_rank_ = 0, K_ = 1, micro_ = 0;  // sequences per rank, micro-batches, sequences each
  std::unique_ptr<StepLoader> train_, val_;
  int64_t val_steps_ = 0;
  std::vector<TrainShard> shards_;
  Precision precision_;
  std::unique_ptr<Parameters> params_;
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<GPT> model_;
  std::optional<RunFiles> files_;
  std::vector<int32_t> x_, y_;
  int64_t start_ = 0;
  double train_ms_ = 0;  // training time, validation excluded, from step 10 on (as the record)
  int64_t timed_ = 0;
  Clock::time_point run_t0_;  // for the ETA: wall time of this process, validation included
  TrainResult result_;
};

TrainingRun::TrainingRun(Trainer& t)
    : t_(t), be_(t.be_), comm_(t.comm_), c_(t.cfg_), N_(t.cfg_.schedule.steps),
      T_(t.cfg_.seq_len) {
  const int world = comm_.size(), rank = comm_.rank();
  if (!c_.resume.empty()) {
    // A resumed run writes where its checkpoint is, wherever the run was first started.
    ck_ = find_checkpoint(c_.resume, [this](const std::string& s) { log("resume: " + s); });
    c_.out_dir = fs::path(ck_->dir).parent_path().string();
  }

  per_rank_ = c_.batch / world;
  K_ = micro_batches(c_, world, be_.preferred_micro_batch_tokens());
  micro_ = per_rank_ / K_;
  result_.micro_batches = K_;
  train_ = std::make_unique<StepLoader>(t.train_files_, micro_, T_, K_, rank, world, c_.model.vocab);
  for (size_t i = 0; i < t.train_files_.size(); ++i)
    shards_.push_back({fs::path(t.train_files_[i]).filename().string(),
                       train_->shard_tokens(int64_t(i)), ""});
  precision_ = resolve_precision(be_, c_.dtype);
  check_ranks_agree();
  if (!t.val_files_.empty() && c_.val_tokens > 0) {
    val_ = std::make_unique<StepLoader>(t.val_files_, micro_, T_, K_, rank, world, c_.model.vocab,
                                        StepLoader::Readers::kPerMicroBatch);
    val_steps_ = c_.val_tokens / (c_.batch * T_);
    const int64_t pass = val_->steps_per_pass();
    check(val_steps_ <= pass, "--val-tokens ", c_.val_tokens, " is more than the validation "
          "shards hold: they give ", pass, " batches of ", c_.batch, " x ", T_, " tokens (",
          pass * c_.batch * T_, " tokens) before repeating; lower --val-tokens to at most that");
  }
  params_ = std::make_unique<Parameters>(be_, c_.model, precision_);
  opt_ = std::make_unique<Optimizer>(be_, *params_, c_.optim, &comm_);
  if (!c_.resume.empty())
    resume();
  else
    start_fresh();
  model_ = std::make_unique<GPT>(be_, *params_, micro_, T_);
  x_.resize(size_t(per_rank_ * T_));
  y_.resize(x_.size());
}

// Ranks started with different flags or data, or resolving an auto value differently on
// unlike machines (--grad-accum 0 is the backend's choice: a GPU and a CPU rank pick
// differently), would issue collectives of different sizes or counts (a hang, or garbage)
// or read overlapping data without a word. Every rank compares what it computes with
// (rank_terms) with every other's before the first collective on the model, and all of them
// stop naming the differences.
// The shards by name, size and content fingerprint (shard_sample_hash: a shard made again
// under the same name and size, on one node only, would otherwise train another replica).
void TrainingRun::check_ranks_agree() {
  if (comm_.size() == 1) return;
  std::vector<std::string> train, val;
  for (size_t i = 0; i < shards_.size(); ++i) {
    shards_[i].sample_hash = shard_sample_hash(t_.train_files_[i]);
    train.push_back(fmt::format("{}, sample hash {}", shard_text(shards_[i]), shards_[i].sample_hash));
  }
  for (const std::string& f : t_.val_files_)
    val.push_back(fmt::format("{} ({} tokens, sample hash {})", fs::path(f).filename().string(),
                              read_shard_header(f), shard_sample_hash(f)));
  const nlohmann::json mine = rank_terms(c_, K_, precision_.str(), train, val);
  std::vector<nlohmann::json> all;
  for (const std::string& text : comm_.all_gather_text(mine.dump()))
    all.push_back(nlohmann::json::parse(text));
  const std::vector<std::string> diffs = rank_differences(all);
  if (diffs.empty()) return;
  std::string list;
  const size_t shown = std::min<size_t>(diffs.size(), 12);
  for (size_t i = 0; i < shown; ++i) list += "\n  " + diffs[i];
  if (shown < diffs.size()) list += fmt::format("\n  ... and {} more", diffs.size() - shown);
  fail("the ranks do not run the same training (their collectives would not match, or their "
       "data would overlap):", list,
       "\nstart every rank with the same flags, data and speedrun build; on machines that "
       "differ, give --grad-accum and --dtype rather than auto");
}

// What this rank starts from, for the ranks to compare: the same path or seed may hold
// other weights on another node (an --init file or a checkpoint copied out of date).
std::string TrainingRun::start_weights() const {
  if (ck_) {
    const auto it = ck_->meta.files.find("model.safetensors");
    return fmt::format("checkpoint {} (step {}, model.safetensors checksum {})", ck_->dir,
                       ck_->meta.step, it == ck_->meta.files.end() ? "?" : it->second.checksum);
  }
  if (!init_file_.empty())
    return fmt::format("--init {} (checksum {})", init_file_, file_checksum(init_file_));
  return fmt::format("--seed {}", c_.seed);
}

// Takes the run directory for this run (rank 0), once the inputs have been checked and
// before anything is written into it. Over several ranks, every rank first reaches this
// exchange having passed its own checks and loaded its starting weights: one that failed
// has ended the job instead (Comm::abort), so a start that fails on any rank never
// deletes or cuts an earlier run's files (--overwrite, a resume's metrics).
void TrainingRun::open_run_dir() {
  if (comm_.size() > 1) {
    const std::vector<std::string> all = comm_.all_gather_text(start_weights());
    for (size_t r = 1; r < all.size(); ++r)
      check(all[r] == all[0], "the ranks start from different weights: rank ", r, " from ",
            all[r], ", rank 0 from ", all[0], "; give every rank the same files");
  }
  if (comm_.is_root()) {
    // What ran this part of the run, for run.json's "launches".
    nlohmann::json launch = {{"speedrun", build_info_json()}, {"device", be_.numerics()},
                             {"ranks", comm_.size()}};
    if (!command_line().empty()) launch["command"] = command_line();
    run_dir_.emplace(ck_ ? RunDir::resume(c_.out_dir, ck_->meta.run_id, ck_->meta.step, launch)
                         : RunDir::start(c_.out_dir, c_.overwrite, launch));
  }
  files_.emplace(c_, comm_.is_root());
}

void TrainingRun::start_fresh() {
  if (!c_.init.empty()) {
    // A run or checkpoint directory stands for its latest weights, as for eval and sample.
    init_file_ = resolve_weights(c_.init, [this](const std::string& s) { log("init: " + s); });
    params_->load(init_file_);
    log(fmt::format("init: weights from {}", init_file_));
  } else {
    params_->init(c_.seed);
  }
  open_run_dir();
  files_->open_metrics(0);
  files_->save_weights(*params_, 0);
  wait_for_rank0_write("the step-0 weights", weights_bytes());
}

// Continues from the checkpoint c_.resume names, after checking it belongs to this run.
void TrainingRun::resume() {
  const FoundCheckpoint& ck = *ck_;
  const auto diffs = config_differences(ck.meta.config, config_to_json(c_));
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += "\n  " + d;
    fail("--resume ", ck.dir, ": this run's config differs from the checkpoint's:", list,
         "\nresume with the checkpoint's values (leave those flags out) or start a new run");
  }
  bool same = ck.meta.train_shards.size() == shards_.size();
  for (size_t i = 0; same && i < shards_.size(); ++i)
    same = shards_[i].file == ck.meta.train_shards[i].file &&
           shards_[i].tokens == ck.meta.train_shards[i].tokens;
  check(same, "--resume ", ck.dir, ": the checkpoint was trained on shards",
        shard_list(ck.meta.train_shards), " but --train now gives", shard_list(shards_),
        ": resume with the same training data");
  // The same names and sizes may hold other tokens (a shard prepared again with another
  // tokenizer or order): the checkpoint's fingerprints say (checkpoints of older versions
  // have none). Every rank checks its own copy of the data (taken once: check_ranks_agree
  // took it already over several ranks).
  for (size_t i = 0; i < shards_.size(); ++i) {
    const std::string& was = ck.meta.train_shards[i].sample_hash;
    if (was.empty()) continue;
    const std::string now = shards_[i].sample_hash.empty() ? shard_sample_hash(t_.train_files_[i])
                                                           : shards_[i].sample_hash;
    check(now == was, "--resume ", ck.dir, ": training shard ", t_.train_files_[i],
          " has the name and size of the checkpoint's (", shard_text(shards_[i]),
          ") but other content (sample hash ", now, ", the checkpoint's ", was,
          "): resume with the data the run was trained on, or start a new run");
    shards_[i].sample_hash = now;
  }
  check(ck.meta.step <= N_, "--resume ", ck.dir, ": checkpoint step ", ck.meta.step,
        " is past --steps ", N_);
  check(c_.stop_after == 0 || c_.stop_after > ck.meta.step, "--stop-after ", c_.stop_after,
        " is not after the checkpoint's step ", ck.meta.step, ": give a later step or none");
  // One reader per sequence of the step, whatever the ranks and micro-batches that wrote
  // the checkpoint or resume it (a checkpoint of readers of several sequences, from an
  // older speedrun, is read as its sequences' own readers).
  std::vector<int64_t> sizes;
  for (const auto& s : shards_) sizes.push_back(s.tokens);
  std::vector<DataLoader::Position> readers;
  try {
    readers = one_sequence_positions(ck.meta.loaders, c_.batch, T_, sizes);
  } catch (const Error& e) {
    fail("--resume ", ck.dir, ": ", e.what(), " (--batch ", c_.batch,
         "): resume with the run's own data and batch, or start a new run");
  }
  load_checkpoint(ck.dir, ck.meta, be_, *params_, *opt_);
  const int64_t mine = train_->readers();
  train_->seek(
      {readers.begin() + comm_.rank() * mine, readers.begin() + (comm_.rank() + 1) * mine});
  start_ = ck.meta.step;
  train_ms_ = ck.meta.train_ms;
  timed_ = ck.meta.timed_steps;
  result_.start_step = start_;
  open_run_dir();
  const int64_t kept = files_->open_metrics(start_, c_.out_dir);
  log(fmt::format("resume: {} at step {}/{}; metrics.jsonl keeps {} lines before it", ck.dir,
                  start_, N_, kept));
  if (!ck.meta.commit.empty() && ck.meta.commit != build_info().commit)
    log(fmt::format("resume: the checkpoint was written by speedrun {}, this is {}: it "
                    "continues the same training, but a change to the code may change the "
                    "losses from here on (bit for bit needs the same build)",
                    ck.meta.commit, build_info().commit));
  if (!ck.meta.numerics.empty() && ck.meta.numerics != be_.numerics())
    log(fmt::format("resume: the checkpoint was computed on {}, this run on {}: it continues "
                    "the same training, but its losses will differ from an uninterrupted "
                    "run's in the last bits (bit for bit needs the same device and --threads)",
                    ck.meta.numerics, be_.numerics()));
}

void TrainingRun::validate(int64_t s, int64_t window) {
  const double vl = evaluate(*model_, *val_, val_steps_, window, comm_);
  result_.val_losses.emplace_back(s, vl);
  if (s == N_) result_.final_val_loss = vl;
  files_->emit({{"step", s}, {"val_loss", vl}, {"window", window}});
  log(fmt::format("step:{}/{} val_loss:{:.4f} train_time:{:.0f}ms step_avg:{:.2f}ms", s, N_, vl,
                  train_ms_, timed_ ? train_ms_ / double(timed_) : 0.0));
}

// One step: K micro-batches accumulate the gradient of this rank's mean loss, the ranks
// average it, the optimizer updates. The only wait for the device is the loss read at the
// end, which is also the step's timing point.
void TrainingRun::train_step(int64_t s, int64_t window) {
  const auto t0 = Clock::now();
  const double lr = lr_multiplier(c_.schedule, s);
  const double mu = muon_momentum_at(c_.schedule, s);
  train_->next(x_.data(), y_.data());
  params_->zero_grad();
  const int64_t n = micro_ * T_;
  const bool ranks = comm_.size() > 1;
  // Per parameter, the ticket of the reduction that averages its gradient over the ranks:
  // the optimizer waits for each only where it reads that gradient.
  std::vector<int64_t> ready;
  auto average = [&](const Tensor& span) {
    const int64_t ticket = comm_.all_reduce_async(span, ReduceOp::Mean);
    for (int i : params_->grads_within(span)) ready[size_t(i)] = ticket;
  };
  if (ranks) ready.assign(size_t(params_->count()), Comm::kAllAsync);
  struct Unhook {  // the hook refers to this frame: gone with it, even when a step throws
    GPT& model;
    ~Unhook() {
      model.on_head_grads = nullptr;
      model.on_layer_grads = nullptr;
    }
  } unhook{*model_};
  for (int64_t k = 0; k < K_; ++k) {
    // In the last micro-batch lm_head's and then each block's gradients are averaged over
    // the ranks as soon as backward has finished them, overlapping the blocks below (on a
    // GPU).
    if (ranks && k == K_ - 1) {
      model_->on_head_grads = [&] { average(params_->head_grads()); };
      model_->on_layer_grads = [&](int64_t l) { average(params_->layer_grads(l)); };
    }
    model_->train_micro_batch(x_.data() + k * n, y_.data() + k * n, window, 1.0 / double(K_));
  }
  if (ranks)
    for (const Tensor& t : params_->other_grads()) average(t);
  opt_->step(lr, mu, ready);
  double loss = 0;
  try {
    loss = model_->take_mean_loss();  // waits for the step to finish
  } catch (const Error& e) {
    fail("training step ", s, ": ", e.what(), " (weights saved so far are in ", c_.out_dir, ")");
  }
  loss = comm_.all_reduce(loss, ReduceOp::Mean);
  const double ms = ms_since(t0);
  if (s == 10) {  // the record times from step 10 on (compilation and warm-up excluded)
    train_ms_ = 0;
    timed_ = 0;
  }
  train_ms_ += ms;
  ++timed_;
  result_.train_losses.push_back(loss);
  nlohmann::json rec = {{"step", s},   {"train_loss", loss}, {"lr", lr},
                        {"window", window}, {"momentum", mu}, {"ms", ms}};
  const size_t peak = be_.peak_bytes();
  if (peak > 0) rec["peak_mib"] = double(peak) / double(1 << 20);
  files_->emit(rec);
  const int64_t done = s + 1;
  const double eta_s = ms_since(run_t0_) / 1000.0 / double(done - start_) * double(N_ - done);
  std::string mem = peak > 0 ? fmt::format(" mem:{:.1f}GiB", double(peak) / double(1 << 30)) : "";
  log(fmt::format("step:{}/{} train_loss:{:.4f} train_time:{:.0f}ms step_avg:{:.2f}ms "
                  "window:{} lr:{:.4f} tok/s:{:.0f}{} eta:{}",
                  done, N_, loss, train_ms_, train_ms_ / double(timed_), window, lr,
                  double(c_.batch * T_) / (ms / 1000.0), mem, format_eta(eta_s)));
}

void TrainingRun::checkpoint(int64_t done) {
  CheckpointMeta m;
  m.step = done;
  m.optimizer_steps = opt_->steps_taken();
  std::vector<int64_t> mine;  // this rank's readers' positions, gathered in rank order
  for (const auto& p : train_->positions()) mine.insert(mine.end(), {p.shard, p.pos});
  const std::vector<int64_t> all = comm_.all_gather(mine);
  for (size_t i = 0; i + 1 < all.size(); i += 2) m.loaders.push_back({all[i], all[i + 1]});
  m.world = comm_.size();
  m.train_ms = train_ms_;
  m.timed_steps = timed_;
  m.config = config_to_json(c_);
  if (comm_.is_root())  // the writer: each shard's fingerprint, taken once per run
    for (size_t i = 0; i < shards_.size(); ++i)
      if (shards_[i].sample_hash.empty()) shards_[i].sample_hash = shard_sample_hash(t_.train_files_[i]);
  m.train_shards = shards_;
  m.run_id = run_dir_ ? run_dir_->run_id() : "";
  m.numerics = be_.numerics();
  const std::string dir = files_->checkpoint(be_, m, *params_, *opt_);
  // No rank runs ahead of a checkpoint being written.
  double bytes = weights_bytes();
  for (const auto& [name, t] : opt_->state()) bytes += double(t.bytes());
  wait_for_rank0_write(fmt::format("the checkpoint of step {}", done), bytes);
  if (!comm_.is_root()) return;
  result_.last_checkpoint = dir;
  log(fmt::format("checkpoint: {}", dir));
}

TrainResult TrainingRun::run() {
  log(fmt::format("run: {} (speedrun {}, commit {}; {})", c_.out_dir, build_info().version,
                  build_info().commit, be_.numerics()));
  log(fmt::format(
      "model: {} layers, {} heads x {}, width {}, vocab {}, {:.2f}M parameters; {} x {} tokens "
      "per step{}; {} steps; {} {}; activations {:.1f} MiB",
      c_.model.layers, c_.model.heads, c_.model.head_dim, c_.model.width(), c_.model.vocab,
      double(params_->numel()) / 1e6, c_.batch, T_,
      comm_.size() > 1 || K_ > 1
          ? fmt::format(" ({} ranks x {} micro-batches x {})", comm_.size(), K_, micro_)
          : "",
      N_, be_.name(), precision_.str(), double(model_->activation_bytes()) / (1 << 20)));
  run_t0_ = Clock::now();
  for (int64_t s = start_; s <= N_; ++s) {
    const int64_t window = attention_window(c_.schedule, s);
    if (validation_due(s)) {
      const auto w = watch_device(fmt::format("validation at step {}/{} on {}", s, N_, be_.name()));
      validate(s, window);
    }
    if (s == N_) break;
    {
      const auto w = watch_device(fmt::format("step {}/{} on {} (forward, backward, optimizer)",
                                              s + 1, N_, be_.name()));
      train_step(s, window);
    }
    const int64_t done = s + 1;
    // A stop asked by a signal on any rank ends every rank after the same step; the log
    // names the signal and the (highest) rank that got it.
    int sig = stop_requested();
    std::string by = sig > 0 ? signal_name(sig) : "";
    if (comm_.size() > 1) {
      const std::vector<int64_t> all = comm_.all_gather(std::vector<int64_t>{sig});
      for (size_t r = 0; r < all.size() && sig == 0; ++r)
        if (all[r] != 0) {
          sig = -1;
          by = fmt::format("{} on rank {}", signal_name(int(all[r])), r);
        }
    }
    const bool signalled = sig != 0 && done < N_;
    const bool stop = (c_.stop_after > 0 && done == c_.stop_after && done < N_) || signalled;
    if ((c_.save_every > 0 && (done % c_.save_every == 0 || done == N_)) || stop) checkpoint(done);
    if (stop) {
      result_.stopped_by_signal = signalled ? sig : 0;
      log(fmt::format("stopped after step {}/{} ({}): continue with speedrun train --resume {}",
                      done, N_, signalled ? by : std::string("--stop-after"),
                      c_.out_dir));
      result_.final_weights = (fs::path(result_.last_checkpoint) / "model.safetensors").string();
      return result_;
    }
  }
  files_->save_weights(*params_, N_);
  wait_for_rank0_write("the final weights", weights_bytes());
  result_.final_weights = files_->weights_path(N_);
  log(fmt::format("saved {}", result_.final_weights));
  return result_;
}

TrainResult Trainer::run() {
  TrainingRun r(*this);
  return r.run();
}

}  // namespace speedrun
