#include "train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "core/atomic_file.h"
#include "core/build_info.h"
#include "core/json_input.h"
#include "core/mapped_file.h"
#include "core/safetensors.h"
#include "train/run_dir.h"

namespace speedrun {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "speedrun-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kModel = "model.safetensors";
constexpr const char* kState = "state.safetensors";
constexpr const char* kMeta = "meta.json";

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int e = errno;
    fail("checkpoint: cannot rename ", from.string(), " to ", to.string(), ": ",
         std::strerror(e), " (check the permissions and free space of ",
         to.parent_path().string(), ")");
  }
}

// Step of a directory named ckpt_step<digits>, or -1.
int64_t checkpoint_step(const std::string& name) {
  static const std::regex re("ckpt_step([0-9]{6,18})");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return -1;
  return std::stoll(m[1].str());
}

std::string read_text_file(const fs::path& p, const std::string& ckpt) {
  std::ifstream f(p, std::ios::binary);
  check(bool(f), "checkpoint ", ckpt, ": cannot read ", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// meta.json's integer `key` of `obj`: a JSON integer in [min, INT64_MAX]. nlohmann's get<>
// would convert a float out of range with undefined behaviour, and wrap a huge or negative
// one silently. A missing key or an `obj` that is no object throws json's out_of_range or
// type_error, which parse_checkpoint_meta turns into an Error.
int64_t meta_int(const nlohmann::json& obj, const char* key, int64_t min, const std::string& ckpt) {
  const nlohmann::json& v = obj.at(key);
  const bool fits = v.is_number_integer() &&
                    !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) &&
                    v.get<int64_t>() >= min;
  check(fits, "checkpoint ", ckpt, ": ", kMeta, ": \"", key, "\" is ", v.dump(),
        ", not an integer >= ", min, ": written by another speedrun version, or damaged; resume "
        "from an older checkpoint");
  return v.get<int64_t>();
}

// An array of meta.json (a JSON object would iterate as its values).
const nlohmann::json& meta_array(const nlohmann::json& obj, const char* key, const std::string& ckpt) {
  const nlohmann::json& v = obj.at(key);
  check(v.is_array(), "checkpoint ", ckpt, ": ", kMeta, ": \"", key, "\" is not an array: "
        "written by another speedrun version, or damaged; resume from an older checkpoint");
  return v;
}

}  // namespace

std::string checkpoint_name(int64_t step) { return fmt::format("ckpt_step{:06d}", step); }

std::string file_checksum(const std::string& path) {
  MappedFile f = MappedFile::open(path, "checkpoint file");
  const uint8_t* p = f.data();
  const size_t n = f.size();
  // Four lanes of multiply-xorshift over little-endian 64-bit words, then a final mix.
  constexpr uint64_t K = 0x9e3779b97f4a7c15ull;
  uint64_t h[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull,
                   0x082efa98ec4e6c89ull};
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      h[l] = (h[l] ^ w) * K;
      h[l] ^= h[l] >> 29;
    }
  uint64_t tail[4] = {0, 0, 0, 0};
  if (n > i) std::memcpy(tail, p + i, n - i);  // an empty file maps to no pointer at all
  uint64_t r = uint64_t(n);
  for (int l = 0; l < 4; ++l) {
    h[l] = (h[l] ^ tail[l]) * K;
    h[l] ^= h[l] >> 29;
    r = (r ^ h[l]) * 0xbf58476d1ce4e5b9ull;
    r ^= r >> 31;
  }
  return fmt::format("{:016x}", r);
}

std::string write_checkpoint(const std::string& out_dir, Backend& backend,
                             const CheckpointMeta& meta, const Parameters& params,
                             const Optimizer& opt,
                             const std::map<std::string, std::string>& weights_meta) {
  const fs::path out(out_dir);
  fs::create_directories(out);
  const std::string name = checkpoint_name(meta.step);
  const std::string pid = std::to_string(::getpid());
  const fs::path final_dir = out / name, tmp = out / ("." + name + ".tmp." + pid);
  fs::remove_all(tmp);
  fs::create_directory(tmp);
  // A failed write (a full disk, a vanished directory) leaves no temporary behind and
  // the earlier checkpoints untouched.
  const fs::path old = out / ("." + name + ".old." + pid);
  try {
    params.save((tmp / kModel).string(), weights_meta, params.dtype());

    const auto state = opt.state();
    std::vector<std::vector<uint8_t>> host(state.size());
    std::vector<TensorRecord> recs;
    for (size_t i = 0; i < state.size(); ++i) {
      const Tensor& t = state[i].second;
      host[i].resize(t.bytes());
      backend.download(host[i].data(), t);
      TensorRecord r;
      r.name = state[i].first;
      r.dtype = t.dtype;
      for (int k = 0; k < t.ndim; ++k) r.shape.push_back(t.shape[k]);
      r.data = host[i].data();
      recs.push_back(std::move(r));
    }
    write_safetensors((tmp / kState).string(), recs,
                      {{"format", "speedrun-optimizer-state"}, {"step", std::to_string(meta.step)}});

    nlohmann::json j;
    j["format"] = kFormat;
    j["version"] = kVersion;
    j["step"] = meta.step;
    j["optimizer_steps"] = meta.optimizer_steps;
    check(!meta.loaders.empty(), "write_checkpoint: no data reader positions");
    // "loader" (reader 0) is what a single-reader run reads back; "loaders" has them all.
    j["loader"] = {{"shard", meta.loaders[0].shard}, {"pos", meta.loaders[0].pos}};
    j["loaders"] = nlohmann::json::array();
    for (const auto& p : meta.loaders) j["loaders"].push_back({{"shard", p.shard}, {"pos", p.pos}});
    j["world"] = meta.world;
    j["run_id"] = meta.run_id;
    j["numerics"] = meta.numerics;
    j["speedrun"] = build_info_json();  // the build that wrote it
    j["log"] = {{"train_ms", meta.train_ms}, {"timed_steps", meta.timed_steps}};
    j["rng"] = "none: training draws no random numbers after the seeded initialisation";
    j["config"] = meta.config;
    j["train_shards"] = nlohmann::json::array();
    for (const auto& s : meta.train_shards) {
      nlohmann::json e = {{"file", s.file}, {"tokens", s.tokens}};
      if (!s.sample_hash.empty()) e["sample_hash"] = s.sample_hash;
      j["train_shards"].push_back(e);
    }
    for (const char* f : {kModel, kState})
      j["files"][f] = {{"bytes", fs::file_size(tmp / f)}, {"checksum", file_checksum((tmp / f).string())}};
    const std::string text = j.dump(2) + "\n";
    AtomicFileWriter w((tmp / kMeta).string(), "checkpoint");
    w.write(text.data(), text.size());
    w.commit();
    fsync_dir(tmp);

    // Replace a checkpoint of the same step (a rerun after resuming from an older one).
    const bool replacing = fs::exists(final_dir);
    if (replacing) rename_or_fail(final_dir, old);
    rename_or_fail(tmp, final_dir);
    fsync_dir(out);
    if (replacing) fs::remove_all(old);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    if (fs::exists(old, ec) && !fs::exists(final_dir, ec)) fs::rename(old, final_dir, ec);
    fail("checkpoint ", final_dir.string(), ": writing failed: ", e.what(),
         " (the earlier checkpoints are intact: free space or fix the directory, then resume)");
  }
  return final_dir.string();
}

CheckpointMeta parse_checkpoint_meta(std::string_view text, const std::string& ckpt_dir) {
  nlohmann::json j;
  try {
    j = parse_json(text);
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint ", ckpt_dir, ": ", kMeta, " is not valid JSON (", e.what(),
         "): the checkpoint is damaged; resume from an older one (pass its directory to "
         "--resume) or delete this one");
  }
  // json::value() throws a json type_error when the key holds another type: compare instead.
  check(j.is_object() && j.contains("format") && j["format"] == kFormat, "checkpoint ", ckpt_dir,
        ": ", kMeta, " is not a speedrun checkpoint (no \"format\": \"", kFormat, "\")");
  check(j.contains("version") && j["version"] == kVersion, "checkpoint ", ckpt_dir,
        ": format version ", j.contains("version") ? j["version"].dump() : "(none)", " is not ",
        kVersion, ": written by another speedrun version");
  CheckpointMeta m;
  try {
    const std::string& c = ckpt_dir;
    m.step = meta_int(j, "step", 0, c);
    m.optimizer_steps = meta_int(j, "optimizer_steps", 0, c);
    if (j.contains("loaders")) {
      for (const auto& p : meta_array(j, "loaders", c))
        m.loaders.push_back({meta_int(p, "shard", 0, c), meta_int(p, "pos", 0, c)});
    } else {
      const nlohmann::json& p = j.at("loader");
      m.loaders.push_back({meta_int(p, "shard", 0, c), meta_int(p, "pos", 0, c)});
    }
    check(!m.loaders.empty(), "checkpoint ", ckpt_dir, ": ", kMeta, " lists no data reader");
    m.world = j.contains("world") ? meta_int(j, "world", 1, c) : 1;
    m.run_id = j.contains("run_id") ? j.at("run_id").get<std::string>() : std::string();
    if (j.contains("numerics")) {
      check(j.at("numerics").is_string(), "checkpoint ", ckpt_dir, ": ", kMeta,
            ": \"numerics\" is a ", j.at("numerics").type_name(),
            ", not a string: damaged; resume from an older checkpoint");
      m.numerics = j.at("numerics").get<std::string>();
    }
    if (j.contains("speedrun") && j.at("speedrun").is_object() && j.at("speedrun").contains("commit"))
      m.commit = j.at("speedrun").at("commit").get<std::string>();
    const nlohmann::json& log = j.at("log");
    check(log.at("train_ms").is_number() && log.at("train_ms").get<double>() >= 0, "checkpoint ",
          ckpt_dir, ": ", kMeta, ": \"train_ms\" is ", log.at("train_ms").dump(),
          ", not a number >= 0: damaged; resume from an older checkpoint");
    m.train_ms = log.at("train_ms").get<double>();
    m.timed_steps = meta_int(log, "timed_steps", 0, c);
    m.config = j.at("config");
    check(m.config.is_object(), "checkpoint ", ckpt_dir, ": ", kMeta, ": \"config\" is a ",
          m.config.type_name(), ", not an object of settings: damaged; resume from an older "
          "checkpoint");
    for (const auto& s : meta_array(j, "train_shards", c))
      m.train_shards.push_back({s.at("file").get<std::string>(), meta_int(s, "tokens", 0, c),
                                s.contains("sample_hash") ? s.at("sample_hash").get<std::string>()
                                                          : std::string()});
    for (const char* f : {kModel, kState}) {
      const auto& info = j.at("files").at(f);
      m.files[f] = {uint64_t(meta_int(info, "bytes", 0, c)), info.at("checksum").get<std::string>()};
    }
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint ", ckpt_dir, ": ", kMeta, " lacks a field or has a wrong type (", e.what(),
         "): written by another speedrun version, or damaged");
  }
  return m;
}

CheckpointMeta read_checkpoint(const std::string& ckpt_dir) {
  const fs::path dir(ckpt_dir);
  check(fs::is_directory(dir), "checkpoint ", ckpt_dir,
        ": not a directory (a checkpoint is a ckpt_stepNNNNNN directory written by speedrun "
        "train --save-every)");
  check(fs::exists(dir / kMeta), "checkpoint ", ckpt_dir, ": no ", kMeta,
        ": not a complete speedrun checkpoint; pass a ckpt_stepNNNNNN directory written by "
        "speedrun train --save-every, or its run directory");
  CheckpointMeta m = parse_checkpoint_meta(read_text_file(dir / kMeta, ckpt_dir), ckpt_dir);
  for (const char* f : {kModel, kState}) {
    const CheckpointFile& info = m.files.at(f);
    const fs::path p = dir / f;
    check(fs::is_regular_file(p), "checkpoint ", ckpt_dir, ": ", f,
          " is missing: the checkpoint is incomplete; resume from an older one");
    const auto size = fs::file_size(p);
    check(size == info.bytes, "checkpoint ", ckpt_dir, ": ", f, " has ", size, " bytes but ",
          kMeta, " says ", info.bytes, " (truncated or replaced): resume from an older checkpoint");
    check(file_checksum(p.string()) == info.checksum, "checkpoint ", ckpt_dir, ": ", f,
          " does not match its checksum in ", kMeta,
          " (the file is corrupt): resume from an older checkpoint");
    SafetensorsFile::open(p.string());  // header and offsets
  }
  return m;
}

void load_checkpoint(const std::string& ckpt_dir, const CheckpointMeta& meta, Backend& backend,
                     Parameters& params, Optimizer& opt) {
  const fs::path dir(ckpt_dir);
  const std::string model = (dir / kModel).string(), state_path = (dir / kState).string();
  const SafetensorsFile w = SafetensorsFile::open(model);
  for (const auto& n : w.names())
    check(w.get(n).dtype == params.dtype(), "checkpoint ", model, ": tensor '", n, "' is ",
          dtype_name(w.get(n).dtype), " but the run computes in ", dtype_name(params.dtype()),
          ": resume with the --dtype of the run that wrote it");
  params.load(model);
  const SafetensorsFile f = SafetensorsFile::open(state_path);
  const auto state = opt.state();
  check(f.names().size() == state.size(), "checkpoint ", state_path, ": ", f.names().size(),
        " optimizer tensors, but this model has ", state.size(),
        ": the checkpoint was written for another model");
  for (const auto& [name, t] : state) {
    check(f.has(name), "checkpoint ", state_path, ": no optimizer tensor '", name,
          "': the checkpoint was written for another model");
    const auto v = f.get(name);
    std::vector<int64_t> want(t.shape.begin(), t.shape.begin() + t.ndim);
    check(v.dtype == t.dtype && v.shape == want, "checkpoint ", state_path, ": tensor '", name,
          "' is ", dtype_name(v.dtype), " of another shape than the optimizer's ",
          dtype_name(t.dtype), " ", t.shape_str(), ": written for another model or --dtype");
    std::vector<uint8_t> host(v.bytes);
    std::memcpy(host.data(), v.data, v.bytes);
    backend.upload(t, host.data());
  }
  opt.set_steps_taken(meta.optimizer_steps);
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const int64_t s = checkpoint_step(e.path().filename().string());
    if (s >= 0 && e.is_directory()) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

FoundCheckpoint find_checkpoint(const std::string& path, const LogFn& warn) {
  const fs::path p(path);
  check(fs::is_directory(p), "--resume ", path,
        ": not a directory; pass a run's --out directory or one of its ckpt_stepNNNNNN");
  if (fs::exists(p / kMeta) || checkpoint_step(p.filename().string()) >= 0)
    return {path, read_checkpoint(path)};
  const auto all = list_checkpoints(path);
  check(!all.empty(), "--resume ", path, ": no checkpoint (ckpt_stepNNNNNN) in it: the run saved "
        "none; train with --save-every K to write them");
  std::string defects;
  for (const auto& c : all) {
    try {
      return {c, read_checkpoint(c)};
    } catch (const Error& e) {
      defects += std::string("\n  ") + e.what();
      if (warn) warn(std::string("skipping a damaged checkpoint: ") + e.what());
    }
  }
  fail("--resume ", path, ": no complete checkpoint:", defects);
}

void prune_checkpoints(const std::string& run_dir, int64_t keep) {
  remove_write_leftovers(run_dir);
  if (keep <= 0) return;
  const auto all = list_checkpoints(run_dir);
  const std::string pid = std::to_string(::getpid());
  for (size_t i = size_t(keep); i < all.size(); ++i) {
    const fs::path c(all[i]);
    const fs::path trash = c.parent_path() / ("." + c.filename().string() + ".trash." + pid);
    rename_or_fail(c, trash);
    fs::remove_all(trash);
  }
}

std::string resolve_weights(const std::string& path, const LogFn& warn) {
  const fs::path p(path);
  if (fs::is_regular_file(p)) return path;
  check(fs::is_directory(p), "weights ", path,
        ": no such file or directory; pass a .safetensors file, a checkpoint directory or a "
        "run directory");
  if (fs::exists(p / kMeta) || checkpoint_step(p.filename().string()) >= 0)
  {
    read_checkpoint(path);  // validated before anything reads it
    return (p / kModel).string();
  }
  // A run directory: its latest weights, a checkpoint's or a model_step file's, whichever
  // has the later step (a run resumed from a checkpoint and finished has its final weights
  // only in model_stepN; at the same step the checkpoint's, which is validated).
  std::string newest;
  int64_t newest_step = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(p, ec)) {
    const std::string n = e.path().filename().string();
    static const std::regex kWeights("model_step([0-9]+)\\.safetensors");
    std::smatch m;
    if (!std::regex_match(n, m, kWeights)) continue;
    const int64_t step = std::stoll(m[1].str());
    if (step > newest_step) newest_step = step, newest = e.path().string();
  }
  if (!list_checkpoints(path).empty()) {
    const FoundCheckpoint ck = find_checkpoint(path, warn);
    if (ck.meta.step >= newest_step) return (fs::path(ck.dir) / kModel).string();
  }
  check(newest_step >= 0, "weights ", path, ": the directory holds no checkpoint "
        "(ckpt_stepNNNNNN) and no model_step*.safetensors: pass a run's --out directory");
  return newest;
}

}  // namespace speedrun
