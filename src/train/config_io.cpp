#include "train/config_io.h"

#include <set>

namespace speedrun {

nlohmann::json config_to_json(const TrainConfig& c) {
  nlohmann::json j;
  j["preset"] = c.preset;
  j["layers"] = c.model.layers;
  j["heads"] = c.model.heads;
  j["head-dim"] = c.model.head_dim;
  j["vocab"] = c.model.vocab;
  j["eot"] = c.model.eot;
  j["rope-base"] = c.model.rope_base;
  j["softcap"] = c.model.softcap;
  j["attn-tile"] = c.model.attn_tile;
  j["steps"] = c.schedule.steps;
  j["warmup"] = c.schedule.warmup;
  j["cooldown"] = c.schedule.cooldown;
  j["window-start"] = c.schedule.window_start;
  j["window-end"] = c.schedule.window_end;
  j["window-schedule"] = enum_name(c.schedule.window_schedule);
  j["momentum-warmup"] = c.schedule.momentum_warmup;
  j["momentum-start"] = c.schedule.momentum_start;
  j["momentum-end"] = c.schedule.momentum_end;
  j["lr-embed"] = c.optim.lr_embed;
  j["lr-head"] = c.optim.lr_head;
  j["lr-scalar"] = c.optim.lr_scalar;
  j["muon-lr"] = c.optim.muon_lr;
  j["adam-beta1"] = c.optim.beta1;
  j["adam-beta2"] = c.optim.beta2;
  j["adam-eps"] = c.optim.eps;
  j["ns-steps"] = c.optim.ns_steps;
  j["ns-bf16"] = c.optim.ns_bf16;
  j["seq-len"] = c.seq_len;
  j["batch"] = c.batch;
  j["val-every"] = c.val_every;
  j["val-tokens"] = c.val_tokens;
  j["save-every"] = c.save_every;
  j["keep"] = c.keep;
  j["stop-after"] = c.stop_after;
  j["seed"] = c.seed;
  j["grad-accum"] = c.grad_accum;
  j["dtype"] = enum_name(c.dtype);
  j["train"] = c.train_glob;
  j["val"] = c.val_glob;
  j["out"] = c.out_dir;
  j["init"] = c.init;
  j["resume"] = c.resume;
  return j;
}

TrainConfig config_from_json(const nlohmann::json& j, const std::string& where) {
  check(j.is_object(), where, ": the config is not a JSON object");
  TrainConfig c;
  auto get = [&](const char* key, auto& field) {
    if (!j.contains(key)) return;
    try {
      j.at(key).get_to(field);
    } catch (const nlohmann::json::exception&) {
      fail(where, ": config key '", key, "' has the wrong type (", j.at(key).dump(),
           "): the file was not written by this version of speedrun");
    }
  };
  std::string window_schedule = enum_name(c.schedule.window_schedule),
              dtype = enum_name(c.dtype);
  get("preset", c.preset);
  get("layers", c.model.layers);
  get("heads", c.model.heads);
  get("head-dim", c.model.head_dim);
  get("vocab", c.model.vocab);
  get("eot", c.model.eot);
  get("rope-base", c.model.rope_base);
  get("softcap", c.model.softcap);
  get("attn-tile", c.model.attn_tile);
  get("steps", c.schedule.steps);
  get("warmup", c.schedule.warmup);
  get("cooldown", c.schedule.cooldown);
  get("window-start", c.schedule.window_start);
  get("window-end", c.schedule.window_end);
  get("window-schedule", window_schedule);
  get("momentum-warmup", c.schedule.momentum_warmup);
  get("momentum-start", c.schedule.momentum_start);
  get("momentum-end", c.schedule.momentum_end);
  get("lr-embed", c.optim.lr_embed);
  get("lr-head", c.optim.lr_head);
  get("lr-scalar", c.optim.lr_scalar);
  get("muon-lr", c.optim.muon_lr);
  get("adam-beta1", c.optim.beta1);
  get("adam-beta2", c.optim.beta2);
  get("adam-eps", c.optim.eps);
  get("ns-steps", c.optim.ns_steps);
  get("ns-bf16", c.optim.ns_bf16);
  get("seq-len", c.seq_len);
  get("batch", c.batch);
  get("val-every", c.val_every);
  get("val-tokens", c.val_tokens);
  get("save-every", c.save_every);
  get("keep", c.keep);
  get("stop-after", c.stop_after);
  get("seed", c.seed);
  get("grad-accum", c.grad_accum);
  get("dtype", dtype);
  get("train", c.train_glob);
  get("val", c.val_glob);
  get("out", c.out_dir);
  get("init", c.init);
  get("resume", c.resume);
  c.schedule.window_schedule =
      parse_enum<WindowSchedule>(window_schedule, where + ": config window-schedule");
  c.dtype = parse_enum<PrecisionChoice>(dtype, where + ": config dtype");
  return c;
}

bool resume_may_differ(const std::string& key) {
  static const std::set<std::string> free = {"out",  "threads", "save-every", "keep",
                                             "stop-after", "train", "val", "init", "resume"};
  return free.count(key) != 0;
}

nlohmann::json merge_resume_config(const nlohmann::json& checkpoint, const nlohmann::json& flags,
                                   const std::vector<std::string>& given) {
  nlohmann::json out = checkpoint;
  std::set<std::string> keys(given.begin(), given.end());
  keys.insert("resume");
  keys.insert("stop-after");
  for (const auto& k : keys)
    if (flags.contains(k)) out[k] = flags.at(k);
  return out;
}

std::vector<std::string> config_differences(const nlohmann::json& checkpoint,
                                            const nlohmann::json& now) {
  std::vector<std::string> out;
  std::set<std::string> keys;
  for (const auto& [k, v] : checkpoint.items()) keys.insert(k);
  for (const auto& [k, v] : now.items()) keys.insert(k);
  for (const auto& k : keys) {
    if (resume_may_differ(k)) continue;
    const auto a = checkpoint.contains(k) ? checkpoint.at(k).dump() : std::string("(absent)");
    const auto b = now.contains(k) ? now.at(k).dump() : std::string("(absent)");
    if (a != b) out.push_back("--" + k + ": checkpoint " + a + ", now " + b);
  }
  return out;
}

}  // namespace speedrun
