// speedrun train: the record's training loop on shards (or the built-in corpus), on this
// process alone or as one rank of a job started by mpirun / srun.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "cli/backend_flags.h"
#include "cli/commands.h"
#include "cli/setting_flags.h"
#include "cli/training_data.h"
#include "data/synthetic.h"
#include "core/stall_watchdog.h"
#include "core/stop_signal.h"
#include "dist/launch.h"
#include "dist/watched_comm.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/config_io.h"
#include "train/run_dir.h"
#include "train/sample.h"
#include "train/settings.h"
#include "train/trainer.h"

#ifdef SPEEDRUN_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace speedrun::cli {

namespace {

struct TrainArgs {
  TrainConfig cfg;
  BackendOptions backend;
  bool no_sample = false;
  std::vector<std::string> given;  // flags given on the command line, without dashes
};

// The run's config: the flags, or for --resume the checkpoint's config with the flags given
// here on top, writing into the checkpoint's own directory; a new run without --out gets a
// directory of its own.
void settle_config(TrainArgs& a) {
  TrainConfig& c = a.cfg;
  const auto given = [&](const char* flag) {
    return std::find(a.given.begin(), a.given.end(), flag) != a.given.end();
  };
  if (!c.resume.empty()) {
    check(!given("overwrite"), "--overwrite with --resume ", c.resume, ": a resumed run "
          "continues its checkpoint and deletes nothing; to start that run over, leave "
          "--resume out and give --out ", c.resume, " --overwrite");
    // Before the ranks start: rank 0 alone speaks (each rank checks its own copy).
    const bool speak = detect_launch().rank == 0;
    const auto ck = find_checkpoint(c.resume, [speak](const std::string& s) {
      if (speak) std::printf("resume: %s\n", s.c_str());
    });
    // The run's own --init again (a sweep resumes a run with its flags) says nothing new.
    const nlohmann::json& was = ck.meta.config;
    const std::string started = was.contains("init") && was.at("init").is_string()
                                    ? was.at("init").get<std::string>() : "";
    std::error_code ec;  // the same file under another spelling is the same --init
    const bool same_init = c.init == started || std::filesystem::equivalent(c.init, started, ec);
    check(!given("init") || same_init, "--init ", c.init, " with --resume ", c.resume,
          ": a resumed run continues from its checkpoint's weights (it started from ",
          started.empty() ? std::string("its initialisation") : started, "); leave --init out");
    const std::string run_dir = std::filesystem::path(ck.dir).parent_path().string();
    check(!given("out") || std::filesystem::equivalent(c.out_dir, run_dir, ec), "--out ",
          c.out_dir, " with --resume ", c.resume, ": a resumed run writes into its own "
          "directory ", run_dir, "; leave --out out (copy the run directory first to branch off)");
    c = config_from_json(merge_resume_config(ck.meta.config, config_to_json(c), a.given),
                         ck.dir + "/meta.json");
    c.resume = ck.dir;  // found once: the trainer reads this checkpoint, not the newest again
    c.out_dir = run_dir;
  } else if (!given("out")) {
    c.out_dir = next_run_dir(c.out_dir);  // runs/tiny-1, runs/tiny-2, ...: never another run's
  }
  check_setting_ranges(c);  // before any data is prepared; the rules between settings follow
                            // in Trainer, once the data has fixed the vocabulary
}

// Where the CUDA backend keeps its GEMM algorithm choices, if anywhere.
void print_gemm_record(const Backend& backend) {
#ifdef SPEEDRUN_HAVE_CUDA
  if (backend.device() != Device::CUDA) return;
  const cuda::GemmCacheInfo g = cuda::gemm_cache_info(backend);
  if (g.record.empty()) return;
  std::printf("gemm algorithms: %s (%zu recorded%s)\n", g.record.c_str(), g.record_read,
              g.tune > 1 ? (", SPEEDRUN_GEMM_TUNE=" + std::to_string(g.tune) +
                            " times the others and adds them").c_str()
                         : ", the others take cuBLASLt's heuristic's first");
#else
  (void)backend;
#endif
}

// A short sample from the final weights, decoded as text (the built-in corpora only).
void print_sample(Backend& backend, const TrainConfig& c, const TrainResult& r,
                  const TrainingData& d) {
  Parameters params(backend, c.model, resolve_precision(backend, c.dtype));
  params.load(r.final_weights);
  SampleOptions o;
  o.context = std::min<int64_t>(c.seq_len, 256);
  o.window = c.schedule.window_end;
  o.max_tokens = d.tokenizer ? 150 : 40;
  o.temperature = 0.8;
  o.seed = c.seed;
  if (d.tokenizer) o.allowed_vocab = d.tokenizer->vocab_size();  // not the padding rows
  const std::vector<int32_t> prompt = {c.model.eot};
  auto out = sample_tokens(backend, params, prompt, o);
  std::string text;
  if (d.tokenizer) {
    text = d.tokenizer->decode(out);
    std::printf("sample (temperature 0.8):\n%s\n", text.c_str());
  } else {
    for (int32_t t : out) text += synthetic_token_text(t, int(c.model.vocab), c.model.eot) + " ";
    std::printf("sample (temperature 0.8): %s\n", text.c_str());
  }
}

// run_train's work once the ranks have started: the data, the trainer (in `trainer`, which
// outlives an error: see run_train), its run and what rank 0 prints after it.
void train_with(TrainArgs& a, Backend& backend, Comm& comm, StallWatchdog& watchdog,
                std::optional<Trainer>& trainer) {
  TrainConfig& c = a.cfg;
  // Rank 0 prepares the built-in corpus and prints; the others find it prepared.
  if (!comm.is_root()) {
    comm.barrier();
    if (!std::freopen("/dev/null", "w", stdout)) std::perror("stdout");
  }
  print_gemm_record(backend);
  const TrainingData data = training_data(c, comm.is_root(), a.given);
  if (comm.is_root() && comm.size() > 1) comm.barrier();
  install_stop_handlers();
  trainer.emplace(backend, comm, c, data.train_files, data.val_files);
  trainer->watchdog = &watchdog;
  const TrainResult r = trainer->run();
  if (r.stopped_by_signal != 0) {
    exit_status() = 128 + (r.stopped_by_signal > 0 ? r.stopped_by_signal : SIGTERM);
    return;
  }
  if (!comm.is_root()) return;
  if (!r.val_losses.empty()) {
    const bool finished = r.val_losses.back().first == c.schedule.steps;
    std::printf("%s val_loss: %.4f (step %lld)\n", finished ? "final" : "last",
                r.val_losses.back().second, (long long)r.val_losses.back().first);
  }
  if ((data.synthetic || data.tokenizer) && !a.no_sample) print_sample(backend, c, r, data);
}

void run_train(TrainArgs& a) {
  settle_config(a);
  TrainConfig& c = a.cfg;
  const LaunchInfo launch = detect_launch();
  // (The GPU: the backend takes the local rank modulo the GPUs this process sees,
  // cuda::choose_gpu. Asking for GPU <local rank> itself failed where each rank sees only
  // its own: srun --gpus-per-task=1.)
  BackendOptions bo = a.backend;
#ifdef SPEEDRUN_HAVE_CUDA
  // A run that times its GEMM algorithms keeps its choices in its folder, so that resuming
  // it runs every GEMM as it did (the same bits).
  if (bo.device != DeviceChoice::CPU && !bo.gemm_algos)
    bo.gemm_algos = cuda::run_gemm_record(c.out_dir, launch.rank, launch.world);
#endif
  std::unique_ptr<Backend> backend = make_backend(bo);
  // From here on a wait for another rank or for the GPU that outlasts --stall-timeout ends
  // this process (core/stall_watchdog.h): the ranks' start (NCCL waits for every rank to
  // join), every collective, and each step and validation on a GPU; and a failure the Comm
  // learns of in the background (NCCL: a peer gone, a link lost) ends it at once.
  std::string advice = "--stall-timeout S sets the limit in seconds (0: wait forever)";
  if (backend->device() != Device::CPU)
    advice += "; SPEEDRUN_CUDA_SYNC=1 in the environment names the kernel a GPU step waits for";
  const std::string resume =
      c.save_every > 0
          ? "continue from the last checkpoint with speedrun train --resume " + c.out_dir
          : "";
  if (!resume.empty()) advice += "; " + resume;
  StallWatchdog watchdog(
      {.limit_s = c.stall_timeout,
       .who = launch.world > 1 ? fmt::format("rank {} of {}", launch.rank, launch.world) : "",
       .advice = advice,
       .failure_advice = resume,
       .on_stall = {}});  // print and end the process
  StallWatchdog::set_process_watchdog(&watchdog);  // SPEEDRUN_CUDA_SYNC names each kernel
  std::unique_ptr<Comm> comm;
  {
    const auto w = watchdog.watch(fmt::format("the job's {} ranks to start together",
                                              launch.world));
    comm = std::make_unique<WatchedComm>(make_comm(launch, *backend), watchdog);
  }
  // Asked every second, also with --stall-timeout 0; ends before comm does.
  StallWatchdog::Watch links;
  if (comm->size() > 1) links = watchdog.add_probe([&cm = *comm] { return cm.background_error(); });
  // What no probe finds: a rank that is frozen rather than gone (NCCL does not even report
  // a peer of the same machine that dies; the launcher ends the job then).
  if (comm->size() > 1 && c.stall_timeout == 0 && comm->is_root())
    std::fprintf(stderr, "warning: --stall-timeout 0 with %d ranks: a rank that freezes (a "
                 "stuck GPU, a swapped-out or stopped process) will hang the job for good; "
                 "give a limit in seconds (default 600)\n", comm->size());
  // In a job of several ranks an error ends every rank from here, with the trainer and the
  // Comm as the error left them: NCCL's ncclCommDestroy (and ncclCommAbort) wait for every
  // rank of the node to call them, and the other ranks wait in a collective this one will
  // never join, so unwinding to main would hang the job with this rank's message unprinted;
  // freeing the trainer's GPU memory waits for the GPU, collectives in flight included.
  // Comm::abort prints the error naming this rank and ends them all (MPI_Abort).
  std::optional<Trainer> trainer;
  try {
    train_with(a, *backend, *comm, watchdog, trainer);
  } catch (const std::exception& e) {
    if (comm->size() > 1) comm->abort(e.what());
    throw;
  }
  if (comm->size() == 1) return;
  end_job_together(*comm, watchdog, [&] {
    links = {};
    trainer.reset();
    comm.reset();
    end_job_runtime();
  });
}

}  // namespace

void add_train_command(CLI::App& app, int argc, char** argv) {
  auto args = std::make_shared<TrainArgs>();
  args->cfg = preset_config(preset_in_args(argc, argv));
  CLI::App* sub = app.add_subcommand(
      "train", "Train a GPT with the record's recipe. Flags default to the preset's values.");
  sub->footer(presets_help());
  // A flag given twice takes its last value (scripts append overrides).
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_setting_flags(sub, args->cfg);
  add_backend_flags(sub, args->backend);
  sub->add_flag("--no-sample", args->no_sample,
                "do not print a sample after training (one is printed for the built-in corpus "
                "only)");
  sub->callback([args, sub]() {
    for (const CLI::Option* o : sub->get_options()) {
      const std::string name = o->get_name();
      if (o->count() > 0) args->given.push_back(name.substr(name.find_first_not_of('-')));
    }
    run_train(*args);
  });
}

}  // namespace speedrun::cli
