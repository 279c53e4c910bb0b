#include "train/settings.h"

#include <cmath>

#include "core/number_text.h"
#include "train/presets.h"

namespace speedrun {

// The table. A new setting is one line here (and its field in TrainConfig); flags, help,
// JSON, resume rules and range checks follow from it.
void visit_setting_table(TrainConfig& c, SettingVisitor& v) {
  using S = Setting;
  constexpr OnResume may_change = OnResume::MayChange, this_run = OnResume::ThisRun;
  GPTConfig& m = c.model;
  ScheduleConfig& s = c.schedule;
  OptimConfig& o = c.optim;
  v(S{.key = "preset", .help = "the values every other flag defaults to (see Presets below)",
      .choices = preset_names},
    c.preset);
  v(S{.key = "train",
      .help = "glob of training shards (default: the built-in corpus: the King James Bible "
              "if installed, else fortunes, else synthetic)",
      .unit = "glob", .on_resume = may_change},
    c.train_glob);
  v(S{.key = "val",
      .help = "glob of validation shards, with --train (--train without it: no validation)",
      .unit = "glob", .on_resume = may_change},
    c.val_glob);
  // The model (SPEC.md "Model").
  // (Each bounded as GPTConfig::validate bounds it: model/config.h.)
  v(S{.key = "layers", .help = "transformer layers",
      .range = Range{.min = 2, .max = double(kMaxLayers), .multiple = 2,
                     .why = "the U-net pairs each encoder layer with a decoder layer"}},
    m.layers);
  v(S{.key = "heads", .help = "attention heads",
      .range = Range{.min = 1, .max = double(kMaxHeads)}},
    m.heads);
  v(S{.key = "head-dim", .help = "dimension of each head",
      .range = Range{.min = 2, .max = double(kMaxHeadDim), .multiple = 2,
                     .why = "rotary turns pairs of dimensions"}},
    m.head_dim);
  v(S{.key = "vocab",
      .help = "vocabulary rows of wte and lm_head (not given, with the built-in corpus: its "
              "tokenizer's ids rounded up to a multiple of 128)",
      .unit = "ids",
      .range = Range{.min = 2, .max = double(kMaxVocab), .why = "token ids are int32"}},
    m.vocab);
  v(S{.key = "eot",
      .help = "document delimiter token id (with the built-in corpus: its tokenizer's)",
      .unit = "id", .range = at_least(0)},
    m.eot);
  v(S{.key = "rope-base", .help = "rotary base", .range = above(0), .flag = false},
    m.rope_base);
  v(S{.key = "softcap", .help = "logit softcap", .range = above(0), .flag = false}, m.softcap);
  v(S{.key = "attn-tile", .help = "block-mask tile edge (0: the backend's for each window)",
      .unit = "tokens", .range = at_least(0), .flag = false},
    m.attn_tile);
  // The batch.
  v(S{.key = "seq-len", .help = "tokens per sequence (T)", .unit = "tokens",
      .range = at_least(1)},
    c.seq_len);
  v(S{.key = "batch",
      .help = "sequences per step over all ranks (B): each rank reads batch / ranks",
      .unit = "sequences", .range = at_least(1)},
    c.batch);
  // The schedules (SPEC.md "Schedules").
  v(S{.key = "steps", .help = "training steps (N)", .unit = "steps", .range = at_least(1)},
    s.steps);
  v(S{.key = "warmup", .help = "steps of linear LR warmup", .unit = "steps",
      .range = at_least(0)},
    s.warmup);
  v(S{.key = "cooldown", .help = "steps of linear LR decay at the end", .unit = "steps",
      .range = at_least(0)},
    s.cooldown);
  constexpr Range window = multiple_of(64, 64, "the window moves in blocks of 64 tokens");
  v(S{.key = "window-start", .help = "attention window at step 0", .unit = "tokens",
      .range = window},
    s.window_start);
  v(S{.key = "window-end", .help = "attention window after the last step", .unit = "tokens",
      .range = window},
    s.window_end);
  v(S{.key = "window-schedule",
      .help = "linear: window-start to window-end over the run; fixed: window-end throughout"},
    s.window_schedule);
  v(S{.key = "momentum-warmup",
      .help = "steps over which Muon's momentum goes from momentum-start to momentum-end",
      .unit = "steps", .range = at_least(0)},
    s.momentum_warmup);
  v(S{.key = "momentum-start", .help = "Muon momentum at step 0", .range = fraction()},
    s.momentum_start);
  v(S{.key = "momentum-end", .help = "Muon momentum after its warmup", .range = fraction()},
    s.momentum_end);
  // The optimizers (SPEC.md "Optimizers").
  v(S{.key = "muon-lr", .help = "Muon learning rate (block matrices)", .range = at_least(0)},
    o.muon_lr);
  v(S{.key = "adam-beta1", .help = "Adam beta1", .range = fraction()}, o.beta1);
  v(S{.key = "adam-beta2", .help = "Adam beta2", .range = fraction()}, o.beta2);
  v(S{.key = "adam-eps", .help = "Adam epsilon", .range = above(0)}, o.eps);
  v(S{.key = "lr-embed", .help = "Adam learning rate of wte", .range = at_least(0)},
    o.lr_embed);
  v(S{.key = "lr-head", .help = "Adam learning rate of lm_head", .range = at_least(0)},
    o.lr_head);
  v(S{.key = "lr-scalar", .help = "Adam learning rate of the scalars", .range = at_least(0)},
    o.lr_scalar);
  v(S{.key = "ns-steps", .help = "Newton-Schulz iterations of Muon", .range = at_least(1)},
    o.ns_steps);
  v(S{.key = "ns-bf16",
      .help = "round Newton-Schulz intermediates to bf16 as the record's GPU run does (the "
              "CPU's choice: the CUDA backend always computes them in bf16)"},
    o.ns_bf16);
  // Validation, initialisation, precision.
  v(S{.key = "val-every", .help = "steps between validations (0: only at the end)",
      .unit = "steps", .range = at_least(0)},
    c.val_every);
  v(S{.key = "val-tokens",
      .help = "tokens per validation, a multiple of batch x seq-len (0: no validation); with "
              "the built-in corpus also the size of its validation part",
      .unit = "tokens", .range = at_least(0)},
    c.val_tokens);
  v(S{.key = "seed",
      .help = "initialisation seed (unused with --init) and the end-of-run sample's"},
    c.seed);
  v(S{.key = "dtype",
      .help = "precision: fp32 (cpu), fp64 (cpu, exact comparisons), bf16 (cuda); auto: the "
              "device's"},
    c.dtype);
  v(S{.key = "grad-accum",
      .help = "micro-batches per rank per step (0: auto, the fewest of at most 65536 "
              "tokens on a GPU, one on the CPU)",
      .range = at_least(0)},
    c.grad_accum);
  // Artefacts and resume: where files go and when, which do not change what is computed.
  v(S{.key = "out",
      .help = "output directory; when not given, N is the first number from 1 whose directory "
              "does not exist",
      .unit = "dir", .on_resume = may_change, .default_suffix = "-N"},
    c.out_dir);
  v(S{.key = "init",
      .help = "start from these weights: a .safetensors file, or a run or checkpoint "
              "directory (its latest weights)",
      .unit = "path",
      .on_resume = may_change},
    c.init);
  v(S{.key = "save-every",
      .help = "steps between checkpoints OUT/ckpt_stepNNNNNN (0: none; weights at start and "
              "end)",
      .unit = "steps", .on_resume = may_change, .range = at_least(0)},
    c.save_every);
  v(S{.key = "keep", .help = "checkpoints to keep, the newest (0: all)",
      .unit = "checkpoints", .on_resume = may_change, .range = at_least(0)},
    c.keep);
  v(S{.key = "stop-after",
      .help = "stop after this many steps with a checkpoint (0: at --steps); the schedule "
              "still spans --steps",
      .unit = "steps", .on_resume = this_run, .range = at_least(0)},
    c.stop_after);
  v(S{.key = "stall-timeout",
      .help = "end the run when a rank waits this long in a collective or for its GPU to "
              "finish a step: a rank frozen or gone, a lost link, a kernel that does not end "
              "(0: wait forever)",
      .unit = "seconds", .on_resume = may_change, .range = at_least(0)},
    c.stall_timeout);
  v(S{.key = "overwrite",
      .help = "start over in an --out that holds another run, deleting that run's files",
      .on_resume = this_run},
    c.overwrite);
  v(S{.key = "resume",
      .help = "continue from the newest complete checkpoint of this run directory (or this "
              "checkpoint directory); other flags default to the checkpoint's config",
      .unit = "dir", .on_resume = this_run},
    c.resume);
}

std::string Setting::name() const { return flag ? "--" + std::string(key) : std::string(key); }

bool Range::bounded() const {
  return min != -std::numeric_limits<double>::infinity() ||
         max != std::numeric_limits<double>::infinity() || multiple != 1;
}

bool Range::contains(double v) const {
  return std::isfinite(v) && (min_open ? v > min : v >= min) && (max_open ? v < max : v <= max);
}

std::string Range::describe() const {
  const bool has_min = min != -std::numeric_limits<double>::infinity(),
             has_max = max != std::numeric_limits<double>::infinity();
  std::string bounds;
  if (has_min && has_max)
    bounds = fmt::format("in {}{}, {}{}", min_open ? '(' : '[', min, max, max_open ? ')' : ']');
  else if (has_min)
    bounds = fmt::format("{} {}", min_open ? ">" : ">=", min);
  else if (has_max)
    bounds = fmt::format("{} {}", max_open ? "<" : "<=", max);
  const std::string kind = multiple == 2  ? "even"
                           : multiple > 1 ? fmt::format("a multiple of {}", multiple)
                                          : "";
  if (kind.empty()) return bounds;
  return bounds.empty() ? kind : kind + ", " + bounds;
}

std::string choice_list(const std::vector<std::string>& names) {
  std::string list;
  for (size_t i = 0; i < names.size(); ++i)
    list += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return list;
}

namespace {

// Sets a field of any setting type from its text; `what` names the source and the flag.
template <class T>
void set_from_text(const Setting& s, T& out, std::string_view text, const std::string& what) {
  if constexpr (std::is_enum_v<T>) {
    out = parse_enum<T>(text, what);  // throws listing the valid names
  } else if constexpr (std::is_same_v<T, bool>) {
    check(text == "true" || text == "false", what, " '", text, "': not true or false");
    out = text == "true";
  } else if constexpr (std::is_same_v<T, std::string>) {
    out = std::string(text);
  } else {
    // Beyond what the type holds: the setting's own range says what it takes.
    out = number_or_throw<T>(text, what, s.range.bounded() ? "must be " + s.range.describe()
                                                           : std::string());
  }
}

}  // namespace

void set_setting(TrainConfig& c, std::string_view key, std::string_view text,
                 std::string_view where) {
  bool found = false;
  visit_settings(c, [&](const Setting& s, auto& x) {
    if (key != s.key) return;
    found = true;
    set_from_text(s, x, text, where.empty() ? s.name() : fmt::format("{}: {}", where, s.name()));
  });
  check(found, where.empty() ? std::string("speedrun train") : std::string(where), ": '", key,
        "' is not a setting of speedrun train");
}

void check_setting_ranges(const TrainConfig& c) {
  visit_settings(c, [](const Setting& s, const auto& x) {
    using T = std::decay_t<decltype(x)>;
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      const Range& r = s.range;
      bool ok = r.contains(double(x));
      if constexpr (std::is_integral_v<T>) ok = ok && x % T(r.multiple) == 0;
      if (ok) return;
      const std::string must = std::isfinite(double(x))
                                   ? r.describe()
                                   : r.bounded() ? "a finite number, " + r.describe()
                                                 : "a finite number";
      fail(s.name(), " ", setting_text(x), ": must be ", must,
           r.why ? std::string(" (") + r.why + ")" : std::string());
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!s.choices) return;
      const auto names = s.choices();
      for (const std::string& n : names)
        if (n == x) return;
      fail(s.name(), " '", x, "': unknown; choose ", choice_list(names));
    }
  });
}

}  // namespace speedrun
