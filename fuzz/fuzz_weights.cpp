// A weights file (`speedrun eval --weights`, `sample`, `export`, `train --init`): the model's
// shape from its metadata or its tensors (GPTConfig::from_weights, with and without the
// flags' hints), then, for a model small enough to build here, every parameter loaded
// (Parameters::load: names, shapes, dtypes, finite values). Shapes come from the file, so
// this is where a size that overflows or a loop over 2^32 layers would start.
#include <cmath>
#include <optional>

#include "backend/cpu/cpu_backend.h"
#include "core/safetensors.h"
#include "model/config.h"
#include "model/params.h"

#include "fuzz_common.h"

namespace {

// The parameters of a model of this shape, in double (no overflow: validate bounds it).
double parameter_count(const speedrun::GPTConfig& c) {
  const double C = double(c.width()), V = double(c.vocab), L = double(c.layers);
  return 2 * V * C + L * (12 * C * C + 3) + L / 2;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::MemFile file(fuzz::text(data, size));
  std::optional<speedrun::SafetensorsFile> opened;
  if (!fuzz::parses(file.path(), [&] { opened.emplace(speedrun::SafetensorsFile::open(file.path())); }))
    return 0;
  const speedrun::SafetensorsFile& f = *opened;
  for (const speedrun::ShapeHints& hints :
       {speedrun::ShapeHints{}, speedrun::ShapeHints{.heads = 2, .head_dim = 0, .eot = 0},
        speedrun::ShapeHints{.heads = 0, .head_dim = 4, .eot = 3}}) {
    speedrun::GPTConfig c;
    if (!fuzz::passes([&] { c = speedrun::GPTConfig::from_weights(f, hints); })) continue;
    fuzz::require(fuzz::passes([&] { c.validate(); }),
                  "from_weights returned a shape validate() refuses");
    fuzz::require(c.eot >= 0 && c.eot < c.vocab, "from_weights: eot outside the vocabulary");
    if (parameter_count(c) > double(1 << 16)) continue;  // too large to build per input
    speedrun::CpuBackend be(1);
    speedrun::Parameters p(be, c, speedrun::DType::F32);
    if (!fuzz::parses(file.path(), [&] { p.load(file.path()); })) continue;
    for (int i = 0; i < p.count(); ++i)
      for (double x : p.to_host_f64(i))
        fuzz::require(std::isfinite(x), "Parameters::load kept a NaN or infinite value");
  }
  return 0;
}
