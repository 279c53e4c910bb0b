// speedrun export: a checkpoint's weights as one safetensors file in bf16 or fp32, with
// SPEC.md's names, that loads as the record's PyTorch state_dict (docs/CHECKPOINTS.md).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/backend_flags.h"
#include "cli/shape_flags.h"
#include "cli/commands.h"
#include "core/safetensors.h"
#include "model/params.h"
#include "train/checkpoint.h"

namespace speedrun::cli {

namespace {

struct ExportArgs {
  std::string checkpoint, out, dtype = "bf16";
  BackendOptions backend{DeviceChoice::CPU, 1, -1, {}};  // reading and rounding: no GPU needed
  ShapeHints shape;
};

void run_export(const ExportArgs& a) {
  namespace fs = std::filesystem;
  const std::string src =
      resolve_weights(a.checkpoint, [](const std::string& s) { std::fprintf(stderr, "export: %s\n", s.c_str()); });
  std::error_code ec;
  check(!fs::exists(a.out) || !fs::equivalent(src, a.out, ec), "export: -o ", a.out,
        " is the checkpoint's own weights file ", src, ": write the export to another path");
  std::map<std::string, std::string> meta;
  GPTConfig cfg;
  {
    const SafetensorsFile f = SafetensorsFile::open(src);
    meta = f.metadata();
    cfg = GPTConfig::from_weights(f, a.shape);
    for (const auto& [k, v] : cfg.to_metadata()) meta[k] = v;  // the export says its shape
  }
  std::unique_ptr<Backend> backend = make_backend(a.backend);
  Parameters params(*backend, cfg, backend->default_precision());
  params.load(src);
  const DType dt = a.dtype == "bf16" ? DType::BF16 : DType::F32;
  meta["exported_from"] = fs::path(src).filename().string();
  params.save(a.out, meta, dt);
  std::printf("export: %d tensors, %.2fM parameters, %s, from %s to %s\n", params.count(),
              double(params.numel()) / 1e6, a.dtype.c_str(), src.c_str(), a.out.c_str());
  std::printf("load in PyTorch (record's GPT as `model`):\n"
              "  from safetensors.torch import load_file\n"
              "  state_dict = load_file(\"%s\")\n"
              "  model.load_state_dict(state_dict)\n",
              a.out.c_str());
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  CLI::App* sub = app.add_subcommand(
      "export", "Write a checkpoint's weights as one bf16/fp32 safetensors file that loads as "
                "the record's PyTorch state_dict (and as speedrun train --init)");
  sub->add_option("checkpoint", a->checkpoint,
                  "a checkpoint directory, a run directory (its latest weights) or a weights "
                  ".safetensors file")
      ->required();
  sub->add_option("--dtype", a->dtype, "bf16 | fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}))
      ->capture_default_str();
  sub->add_option("-o,--out", a->out, "the file to write (.safetensors)")->required();
  add_backend_flags(sub, a->backend);
  add_shape_flags(sub, a->shape);
  sub->callback([a]() { run_export(*a); });
}

}  // namespace speedrun::cli
