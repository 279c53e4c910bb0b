// The settings table (train/settings.h) and what is derived from it: every flag once in
// `speedrun train --help` with the preset's value, the presets' values (SPEC.md), the JSON
// round trip, the resume comparison and merge, and the checks each setting gets (range,
// finiteness, enum names) and those between settings.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/number_text.h"
#include "run_command.h"
#include "train/config.h"
#include "train/config_io.h"
#include "train/presets.h"
#include "train/settings.h"

using namespace speedrun;

namespace {

// The help line of `flag` ("  --seq-len TOKENS=1024   tokens per ..."), and how many lines
// declare it.
struct HelpLine {
  int count = 0;
  std::string line;
};
HelpLine help_line(const std::string& help, const std::string& flag) {
  HelpLine h;
  const std::string start = "\n  " + flag;
  for (size_t at = help.find(start); at != std::string::npos; at = help.find(start, at + 1)) {
    const char after = help[at + start.size()];
    if (after != ' ' && after != '\n') continue;  // --val is a prefix of --val-every
    ++h.count;
    h.line = help.substr(at + 1, help.find('\n', at + 1) - at - 1);
  }
  return h;
}

// Whether a help line shows `text` as the default ("--seq-len TOKENS=1024  ...").
bool shows_default(const std::string& line, const std::string& text) {
  const size_t at = line.find("=" + text);
  const size_t end = at + 1 + text.size();
  return at != std::string::npos && (end == line.size() || line[end] == ' ');
}

// Every long flag declared in a --help text.
std::set<std::string> help_flags(const std::string& help) {
  std::set<std::string> out;
  for (size_t at = help.find("\n  --"); at != std::string::npos; at = help.find("\n  --", at + 1))
    out.insert(help.substr(at + 3, help.find_first_of(" \n", at + 3) - at - 3));
  return out;
}

// A value different from x of the same type.
template <class T> T another(const T& x) {
  if constexpr (std::is_same_v<T, bool>) return !x;
  else if constexpr (std::is_same_v<T, std::string>) return x + "-other";
  else if constexpr (std::is_enum_v<T>)
    return EnumNames<T>::list[0].value == x ? EnumNames<T>::list[1].value
                                            : EnumNames<T>::list[0].value;
  else return T(x + 64);
}

std::string error_of(const TrainConfig& c) {
  try {
    c.validate();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The error set_setting(c, key, text, where) throws, or "" (c takes the value then).
std::string set_error(TrainConfig& c, const char* key, const char* text, const char* where) {
  try {
    set_setting(c, key, text, where);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Settings, KeysAreUniqueAndCoverTheConfigJson) {
  std::set<std::string> keys;
  int flags = 0;
  visit_settings(TrainConfig{}, [&](const Setting& s, const auto&) {
    EXPECT_TRUE(keys.insert(s.key).second) << "twice: " << s.key;
    flags += s.flag;
  });
  EXPECT_EQ(flags, 41);  // all but rope-base, softcap, attn-tile
  std::set<std::string> json_keys;
  const nlohmann::json j = config_to_json(TrainConfig{});
  for (const auto& [k, v] : j.items()) json_keys.insert(k);
  EXPECT_EQ(json_keys, keys);
  TrainConfig c, other;
  EXPECT_EQ(flag_of(c, c.val_tokens), "--val-tokens");
  EXPECT_EQ(flag_of(c, c.schedule.window_end), "--window-end");
  EXPECT_EQ(flag_of(c, c.model.eot), "--eot");
  EXPECT_EQ(flag_of(c, c.optim.beta1), "--adam-beta1");
  EXPECT_EQ(flag_of(c, c.model.rope_base), "rope-base");  // no flag: the config key
  EXPECT_THROW(flag_of(c, other.seq_len), Error);         // a field of another config
}

TEST(Settings, HelpListsEveryFlagOnceWithThePresetsValue) {
  for (const std::string& name : preset_names()) {
    const Outcome r = run_cli("train --preset " + name + " --help");
    ASSERT_EQ(r.code, 0) << r.out;
    std::set<std::string> expected = {"--device", "--threads", "--no-sample"};  // not settings
    visit_settings(preset_config(name), [&](const Setting& s, const auto& x) {
      const HelpLine h = help_line(r.out, s.name());
      if (!s.flag) {
        EXPECT_EQ(h.count, 0) << s.key << " has no flag";
        return;
      }
      expected.insert(s.name());
      ASSERT_EQ(h.count, 1) << name << ": " << s.name() << " in:\n" << r.out;
      if constexpr (std::is_same_v<std::decay_t<decltype(x)>, bool>) {
        EXPECT_NE(h.line.find(x ? "(default: on)" : "(default: off)"), std::string::npos)
            << name << ": " << h.line;
      } else if (!setting_text(x).empty()) {  // an empty string shows no default
        EXPECT_TRUE(shows_default(h.line, setting_text(x) + s.default_suffix)) << name << ": " << h.line;
      }
    });
    EXPECT_EQ(help_flags(r.out), expected) << name << ": flags not from the table in:\n" << r.out;
    EXPECT_NE(r.out.find("  " + name + ": "), std::string::npos) << "preset list:\n" << r.out;
  }
  // The values themselves, spelled out.
  auto steps = [](const std::string& args) {
    return help_line(run_cli("train " + args + " --help").out, "--steps").line;
  };
  EXPECT_NE(steps("--preset record").find("STEPS=1750 "), std::string::npos);
  EXPECT_NE(steps("--preset=previous-record").find("STEPS=1875 "), std::string::npos);
  EXPECT_NE(steps("").find("STEPS=300 "), std::string::npos);  // tiny, the default
  EXPECT_NE(steps("--preset record --preset tiny").find("STEPS=300 "), std::string::npos);
  const std::string rec = run_cli("train --preset record --help").out;
  EXPECT_NE(help_line(rec, "--seq-len").line.find("TOKENS=65536 "), std::string::npos);
  EXPECT_NE(help_line(rec, "--adam-eps").line.find("=1e-08 "), std::string::npos);
  EXPECT_NE(help_line(rec, "--window-end").line.find("TOKENS=1792 "), std::string::npos);
  // Without --out a run takes a new numbered directory, which is what --help shows.
  EXPECT_NE(help_line(rec, "--out").line.find("DIR=runs/record-N "), std::string::npos);
}

TEST(Settings, PresetsKeepSpecValues) {
  const TrainConfig r = preset_config("record");
  EXPECT_EQ(r.preset, "record");
  EXPECT_EQ(r.model.layers, 12);
  EXPECT_EQ(r.model.heads, 6);
  EXPECT_EQ(r.model.head_dim, 128);
  EXPECT_EQ(r.model.vocab, 50304);
  EXPECT_EQ(r.model.eot, 50256);
  EXPECT_EQ(r.seq_len, 65536);
  EXPECT_EQ(r.batch, 8);  // sequences per step over all ranks
  EXPECT_EQ(r.schedule.steps, 1750);
  EXPECT_EQ(r.schedule.warmup, 0);
  EXPECT_EQ(r.schedule.cooldown, 640);
  EXPECT_EQ(r.schedule.window_start, 64);
  EXPECT_EQ(r.schedule.window_end, 1792);
  EXPECT_EQ(r.schedule.window_schedule, WindowSchedule::Linear);
  EXPECT_EQ(r.schedule.momentum_warmup, 300);
  EXPECT_EQ(r.schedule.momentum_start, 0.85);
  EXPECT_EQ(r.schedule.momentum_end, 0.95);
  EXPECT_EQ(r.optim.muon_lr, 0.05);
  EXPECT_EQ(r.optim.beta1, 0.8);
  EXPECT_EQ(r.optim.beta2, 0.95);
  EXPECT_EQ(r.optim.eps, 1e-8);
  EXPECT_EQ(r.optim.lr_embed, 0.6);
  EXPECT_EQ(r.optim.lr_head, 0.008);
  EXPECT_EQ(r.optim.lr_scalar, 0.04);
  EXPECT_EQ(r.optim.ns_steps, 5);
  EXPECT_FALSE(r.optim.ns_bf16);
  EXPECT_EQ(r.val_every, 125);
  EXPECT_EQ(r.val_tokens, 10485760);
  EXPECT_NO_THROW(r.validate(8));

  // The previous record: the record but for SPEC.md's "before" column.
  TrainConfig p = preset_config("previous-record");
  EXPECT_EQ(p.schedule.steps, 1875);
  EXPECT_EQ(p.schedule.cooldown, 562);
  EXPECT_EQ(p.schedule.window_schedule, WindowSchedule::Fixed);
  EXPECT_EQ(p.schedule.window_start, 1024);
  EXPECT_EQ(p.schedule.window_end, 1024);
  EXPECT_EQ(p.optim.beta1, 0.9);
  EXPECT_EQ(p.optim.muon_lr, 0.04);
  EXPECT_EQ(p.schedule.momentum_warmup, 500);
  p.preset = "record";
  p.schedule = r.schedule;
  p.optim = r.optim;
  p.out_dir = r.out_dir;
  EXPECT_EQ(config_to_json(p), config_to_json(r));
  EXPECT_NO_THROW(preset_config("previous-record").validate(8));

  const TrainConfig t = preset_config("tiny");
  EXPECT_EQ(t.model.layers, 4);
  EXPECT_EQ(t.model.heads, 2);
  EXPECT_EQ(t.model.head_dim, 64);  // a head dim the GPU's attention kernels take
  EXPECT_EQ(t.model.vocab, 512);
  EXPECT_EQ(t.model.eot, 0);
  EXPECT_EQ(t.seq_len, 1024);
  EXPECT_EQ(t.batch, 4);
  EXPECT_EQ(t.schedule.steps, 300);
  EXPECT_EQ(t.schedule.cooldown, 110);
  EXPECT_EQ(t.schedule.window_start, 64);
  EXPECT_EQ(t.schedule.window_end, 512);
  EXPECT_EQ(t.schedule.momentum_warmup, 50);
  EXPECT_EQ(t.val_every, 50);
  EXPECT_EQ(t.val_tokens, 32768);
  EXPECT_EQ(t.out_dir, "runs/tiny");
  EXPECT_NO_THROW(t.validate());
  EXPECT_EQ(TrainConfig{}.preset, "tiny");  // what `speedrun train` starts from

  try {
    preset_config("fastest");
    ADD_FAILURE() << "no error for an unknown preset";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("record, previous-record or tiny"), std::string::npos)
        << e.what();
  }
}

TEST(Settings, EveryPresetRoundTripsThroughJson) {
  for (const std::string& name : preset_names()) {
    const TrainConfig c = preset_config(name);
    const nlohmann::json j = config_to_json(c);
    const TrainConfig d = config_from_json(nlohmann::json::parse(j.dump()), "test");
    EXPECT_EQ(config_to_json(d), j) << name;
    EXPECT_TRUE(config_differences(j, config_to_json(d)).empty()) << name;
    // Field by field, through the table.
    std::vector<std::string> a, b;
    visit_settings(c, [&](const Setting&, const auto& x) { a.push_back(setting_text(x)); });
    visit_settings(d, [&](const Setting&, const auto& x) { b.push_back(setting_text(x)); });
    EXPECT_EQ(a, b) << name;
  }
  // Enums are stored as today's names.
  TrainConfig c = preset_config("previous-record");
  c.dtype = PrecisionChoice::BF16;
  const nlohmann::json j = config_to_json(c);
  EXPECT_EQ(j.at("window-schedule"), "fixed");
  EXPECT_EQ(j.at("dtype"), "bf16");
}

TEST(Settings, ResumeListsExactlyTheSettingsThatMustNotDiffer) {
  const TrainConfig base = preset_config("tiny");
  const nlohmann::json ck = config_to_json(base);
  std::vector<std::string> fixed;
  TrainConfig all = base;  // every setting changed
  visit_settings(all, [&](const Setting& s, auto& x) {
    TrainConfig one = base;
    visit_settings(one, [&](const Setting& t, auto& y) {
      if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::decay_t<decltype(y)>>)
        if (std::string(t.key) == s.key) y = another(y);
    });
    const auto d = config_differences(ck, config_to_json(one));
    if (s.on_resume == OnResume::Same) {
      ASSERT_EQ(d.size(), 1u) << s.key;
      EXPECT_EQ(d[0].rfind(s.name() + ": checkpoint ", 0), 0u) << d[0];
      fixed.push_back(s.name());
    } else {
      EXPECT_TRUE(d.empty()) << s.key << " may change on resume: " << d[0];
    }
    x = another(x);
  });
  const auto d = config_differences(ck, config_to_json(all));
  ASSERT_EQ(d.size(), fixed.size());
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(d[i].rfind(fixed[i] + ":", 0), 0u) << d[i];
  // Exactly these may change (they do not change what is computed).
  std::set<std::string> free;
  visit_settings(base, [&](const Setting& s, const auto&) {
    if (s.on_resume != OnResume::Same) free.insert(s.key);
  });
  EXPECT_EQ(free, (std::set<std::string>{"out", "save-every", "keep", "stop-after", "train",
                                         "val", "init", "resume", "overwrite", "stall-timeout"}));
  // Exact text of one line, as README and CHECKPOINTS.md show it.
  TrainConfig s = base;
  s.seq_len = 128;
  EXPECT_EQ(config_differences(ck, config_to_json(s)),
            std::vector<std::string>{"--seq-len: checkpoint 1024, now 128"});
}

TEST(Settings, OlderCheckpointsKeysThatAreNoSettingsAreIgnored) {
  nlohmann::json ck = config_to_json(preset_config("tiny"));
  ck["threads"] = 4;
  ck["rank"] = 0;
  ck["world"] = 1;
  const TrainConfig c = config_from_json(ck, "meta.json");
  EXPECT_TRUE(config_differences(ck, config_to_json(c)).empty());
  const auto merged = merge_resume_config(ck, config_to_json(c), {"threads", "out"});
  EXPECT_NO_THROW(config_from_json(merged, "meta.json"));
}

TEST(Settings, ResumeMergeTakesGivenFlagsAndThisInvocationsOwn) {
  TrainConfig run = preset_config("tiny");
  run.stop_after = 100;
  run.save_every = 10;
  run.resume = "runs/old";
  const nlohmann::json ck = config_to_json(run);
  TrainConfig now = preset_config("record");  // flags not given: another preset's defaults
  now.resume = "runs/a";
  now.out_dir = "elsewhere";
  now.keep = 2;
  const nlohmann::json m = merge_resume_config(ck, config_to_json(now), {"out", "resume"});
  EXPECT_EQ(m.at("out"), "elsewhere");          // given
  EXPECT_EQ(m.at("keep"), 0);                   // not given: the checkpoint's
  EXPECT_EQ(m.at("save-every"), 10);
  EXPECT_EQ(m.at("steps"), 300);
  EXPECT_EQ(m.at("resume"), "runs/a");          // this invocation's, given or not
  EXPECT_EQ(m.at("stop-after"), 0);
}

TEST(Settings, EveryNumberMustBeFiniteAndInRange) {
  const double nan = std::numeric_limits<double>::quiet_NaN(),
               inf = std::numeric_limits<double>::infinity();
  int doubles = 0;
  visit_settings(preset_config("tiny"), [&](const Setting& s, const auto& x) {
    if constexpr (std::is_same_v<std::decay_t<decltype(x)>, double>) {
      ++doubles;
      for (double bad : {nan, inf, -inf}) {
        TrainConfig c = preset_config("tiny");
        set_setting(c, s.key, fmt::format("{}", bad), "test");
        const std::string e = error_of(c);
        EXPECT_EQ(e.rfind(s.name() + " " + fmt::format("{}", bad) + ": must be a finite number", 0),
                  0u)
            << s.key << ": " << e;
      }
    }
  });
  EXPECT_EQ(doubles, 12);
  TrainConfig c = preset_config("tiny");
  c.seq_len = 0;
  EXPECT_EQ(error_of(c), "--seq-len 0: must be >= 1");
  c = preset_config("tiny");
  c.optim.beta2 = 1;
  EXPECT_EQ(error_of(c), "--adam-beta2 1: must be in [0, 1)");
  c = preset_config("tiny");
  c.optim.eps = 0;
  EXPECT_EQ(error_of(c), "--adam-eps 0: must be > 0");
  c = preset_config("tiny");
  c.model.head_dim = 15;
  EXPECT_EQ(error_of(c).rfind("--head-dim 15: must be even, in [2, 65536]", 0), 0u) << error_of(c);
  // The model's shape is bounded so that no element count overflows (and a typo does not
  // build 2^32 layers): each dimension, and the width they make.
  c = preset_config("tiny");
  c.model.layers = int64_t(1) << 32;
  EXPECT_EQ(error_of(c).rfind("--layers 4294967296: must be even, in [2, 65536]", 0), 0u) << error_of(c);
  c = preset_config("tiny");
  c.model.vocab = int64_t(1) << 32;
  EXPECT_EQ(error_of(c), "--vocab 4294967296: must be in [2, 2147483647] (token ids are int32)");
  c = preset_config("tiny");
  c.model.heads = 65536;
  c.model.head_dim = 64;
  EXPECT_EQ(error_of(c), "--heads 65536 x --head-dim 64 is a width of 4194304, more than "
                         "1048576: lower them");
  c = preset_config("tiny");
  c.model.softcap = 0;
  EXPECT_EQ(error_of(c), "softcap 0: must be > 0");
  c = preset_config("tiny");
  c.preset = "fastest";
  EXPECT_EQ(error_of(c), "--preset 'fastest': unknown; choose record, previous-record or tiny");
  c = preset_config("tiny");  // batch x seq-len past int64 (found by fuzz_checkpoint_meta)
  c.batch = 333333333333338;
  EXPECT_EQ(error_of(c), "--batch 333333333333338 x --seq-len 1024 is more than 2^40 tokens "
                         "per step: lower them");
}

TEST(Settings, EnumsAndTextsParseOnceListingTheValidValues) {
  TrainConfig c;
  set_setting(c, "window-schedule", "fixed", "test");
  EXPECT_EQ(c.schedule.window_schedule, WindowSchedule::Fixed);
  set_setting(c, "dtype", "fp64", "test");
  EXPECT_EQ(c.dtype, PrecisionChoice::FP64);
  auto error = [&](const char* key, const char* text) { return set_error(c, key, text, "test"); };
  EXPECT_EQ(error("window-schedule", "shrink"),
            "test: --window-schedule 'shrink': unknown; choose linear or fixed");
  EXPECT_EQ(error("dtype", "fp16"),
            "test: --dtype 'fp16': unknown; choose auto, fp32, fp64 or bf16");
  EXPECT_EQ(error("steps", "12x"), "test: --steps '12x': not an integer");
  EXPECT_EQ(error("seed", "-1"), "test: --seed '-1': not an integer >= 0");
  EXPECT_EQ(error("ns-bf16", "yes"), "test: --ns-bf16 'yes': not true or false");
  EXPECT_EQ(error("threads", "2"), "test: 'threads' is not a setting of speedrun train");
  // From a checkpoint's config.
  nlohmann::json j = config_to_json(TrainConfig{});
  j["window-schedule"] = "cosine";
  try {
    config_from_json(j, "meta.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear or fixed"), std::string::npos) << e.what();
  }
  // On the command line.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--window-schedule shrink", "linear,fixed"},
      {"--dtype fp16", "auto,fp32,fp64,bf16"},
      {"--preset fastest", "record,previous-record,tiny"}};
  for (const auto& [args, valid] : cases) {
    const Outcome r = run_cli("train " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_NE(r.out.find(valid), std::string::npos) << args << ":\n" << r.out;
  }
}

// A number is read the same way wherever it comes from (core/number_text.h): decimal, so
// "010" is ten on the command line as in a sweep spec (CLI11 alone read it as octal eight,
// "0x10" as sixteen, and "-1" for an unsigned flag as 2^64 - 1).
TEST(Settings, NumbersAreDecimalWhereverTheyAreRead) {
  int64_t i = 7;
  EXPECT_EQ(read_number("010", i), NumberText::kOk);
  EXPECT_EQ(i, 10);
  EXPECT_EQ(read_number("+5", i), NumberText::kOk);
  EXPECT_EQ(i, 5);
  EXPECT_EQ(read_number("-9223372036854775808", i), NumberText::kOk);
  EXPECT_EQ(i, std::numeric_limits<int64_t>::min());
  for (const char* bad : {"", "+", "0x10", "1.5", "1e3", " 5", "5 ", "++5", "+-5", "true", "1_000"}) {
    i = 7;
    EXPECT_EQ(read_number(bad, i), NumberText::kNotANumber) << "'" << bad << "'";
    EXPECT_EQ(i, 7) << bad;
  }
  EXPECT_EQ(read_number("9223372036854775808", i), NumberText::kOutOfRange);
  uint64_t u = 0;
  EXPECT_EQ(read_number("-1", u), NumberText::kNotANumber);
  EXPECT_EQ(read_number("18446744073709551615", u), NumberText::kOk);
  EXPECT_EQ(u, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(read_number("18446744073709551616", u), NumberText::kOutOfRange);
  int32_t small = 0;
  EXPECT_EQ(read_number("2147483648", small), NumberText::kOutOfRange);
  double d = 0;
  EXPECT_EQ(read_number("+0.05", d), NumberText::kOk);
  EXPECT_EQ(d, 0.05);
  EXPECT_EQ(read_number("1e-8", d), NumberText::kOk);
  EXPECT_EQ(read_number("inf", d), NumberText::kOk);  // the setting's range refuses it
  EXPECT_EQ(read_number("1e999", d), NumberText::kOutOfRange);
  EXPECT_EQ(read_number("0x1p3", d), NumberText::kNotANumber);
  EXPECT_EQ(read_number("0.5x", d), NumberText::kNotANumber);

  // A preset or a sweep spec (set_setting) and the command line give the same config.
  TrainConfig c = preset_config("tiny");
  set_setting(c, "steps", "010", "spec");
  EXPECT_EQ(c.schedule.steps, 10);
  auto error = [&](const char* key, const char* text) { return set_error(c, key, text, "spec"); };
  EXPECT_EQ(error("steps", "0x10"), "spec: --steps '0x10': not an integer");
  EXPECT_EQ(error("steps", "99999999999999999999"),
            "spec: --steps 99999999999999999999: out of range (an integer in "
            "[-9223372036854775808, 9223372036854775807]); must be >= 1");
  EXPECT_EQ(error("muon-lr", "1e999").rfind("spec: --muon-lr 1e999: out of range (a number of "
                                            "magnitude below 1.7976931348623157e+308); must be >= 0",
                                            0),
            0u)
      << error("muon-lr", "1e999");
  EXPECT_EQ(error("seed", "18446744073709551616"),
            "spec: --seed 18446744073709551616: out of range (an integer in [0, "
            "18446744073709551615])");
}

TEST(Settings, RulesBetweenSettingsNameTheirFlags) {
  TrainConfig c = preset_config("tiny");  // seq-len 1024, window 64 -> 512, 300 steps
  c.schedule.window_end = 2048;
  EXPECT_EQ(error_of(c).rfind("--window-end 2048 exceeds --seq-len 1024: the attention window "
                              "would be longer than the sequence", 0),
            0u)
      << error_of(c);
  c = preset_config("tiny");
  c.schedule.window_start = 2048;
  c.schedule.window_end = 2048;
  EXPECT_EQ(error_of(c).rfind("--window-start 2048 exceeds --seq-len 1024", 0), 0u) << error_of(c);
  c.seq_len = 2048;
  c.val_tokens = 4 * 2048;
  EXPECT_EQ(error_of(c), "");
  c = preset_config("tiny");
  c.schedule.window_start = 512;
  c.schedule.window_end = 256;
  EXPECT_EQ(error_of(c).rfind("--window-end 256 is below --window-start 512: a linear "
                              "--window-schedule would shrink the window", 0),
            0u)
      << error_of(c);
  c.schedule.window_schedule = WindowSchedule::Fixed;  // start unused: allowed
  EXPECT_EQ(error_of(c), "");
  c = preset_config("tiny");
  c.stop_after = 301;
  EXPECT_EQ(error_of(c).rfind("--stop-after 301 is beyond --steps 300", 0), 0u) << error_of(c);
  c.stop_after = 300;
  EXPECT_EQ(error_of(c), "");
  c = preset_config("tiny");
  c.schedule.warmup = 200;
  EXPECT_EQ(error_of(c), "--warmup 200 + --cooldown 110 exceed --steps 300: the LR schedule "
                        "does not fit in the run; lower them or raise --steps");
  c = preset_config("tiny");
  c.model.eot = 512;
  EXPECT_EQ(error_of(c).rfind("--eot 512 is outside the vocabulary [0, 512): give --vocab", 0),
            0u)
      << error_of(c);
  c = preset_config("tiny");
  c.val_tokens = 1000;
  EXPECT_EQ(error_of(c).rfind("--val-tokens 1000 is not a multiple", 0), 0u) << error_of(c);
  // Ranks and micro-batches: batch 4 over 3 ranks; grad-accum 3 of 4 sequences per rank.
  c = preset_config("tiny");
  try {
    c.validate(3);
    ADD_FAILURE() << "no error for 4 sequences over 3 ranks";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--batch 4 is not a multiple of the 3 ranks", 0), 0u)
        << e.what();
  }
  c.grad_accum = 3;
  EXPECT_EQ(error_of(c).rfind("--grad-accum 3 does not divide the 4 sequences", 0), 0u)
      << error_of(c);
  // Through the binary, before any data is read.
  const Outcome r = run_cli("train --muon-lr nan --train /nonexistent/*.bin");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--muon-lr nan: must be a finite number"), std::string::npos) << r.out;
}
