#include "model/params.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/bf16.h"
#include "core/rng.h"
#include "core/safetensors.h"

namespace speedrun {

namespace {

std::string weights_shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t k = 0; k < s.size(); ++k) t += (k ? "," : "") + std::to_string(s[k]);
  return t + "]";
}

}  // namespace

std::vector<ParamSpec> param_table(const GPTConfig& c) {
  const int64_t C = c.width(), F = c.hidden(), V = c.vocab, L = c.layers;
  using G = ParamGroup;
  using W = Weights;
  using LW = LayerWeights;
  const InitRule zero{InitRule::Zero, {}}, normal{InitRule::Normal, {}},
      linear{InitRule::UniformFanIn, {}};
  std::vector<ParamSpec> t;
  //          name                     group     shape   init                          layer  view
  t.push_back({"transformer.wte.weight", G::Embed, {V, C}, normal, -1, &W::wte, nullptr});
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    t.push_back({p + "lambdas", G::Scalar, {2}, {InitRule::Values, {1.0, 0.0}}, i, nullptr, &LW::lambdas});
    t.push_back({p + "attn.lamb", G::Scalar, {}, {InitRule::Values, {0.5}}, i, nullptr, &LW::lamb});
    t.push_back({p + "attn.c_q.weight", G::Matrix, {C, C}, linear, i, nullptr, &LW::c_q});
    t.push_back({p + "attn.c_k.weight", G::Matrix, {C, C}, linear, i, nullptr, &LW::c_k});
    t.push_back({p + "attn.c_v.weight", G::Matrix, {C, C}, linear, i, nullptr, &LW::c_v});
    t.push_back({p + "attn.c_proj.weight", G::Matrix, {C, C}, zero, i, nullptr, &LW::c_proj});
    t.push_back({p + "mlp.c_fc.weight", G::Matrix, {F, C}, linear, i, nullptr, &LW::c_fc});
    t.push_back({p + "mlp.c_proj.weight", G::Matrix, {C, F}, zero, i, nullptr, &LW::mlp_proj});
  }
  t.push_back({"lm_head.weight", G::Head, {V, C}, zero, -1, &W::lm_head, nullptr});
  t.push_back({"skip_weights", G::Scalar, {L / 2}, {InitRule::Values, {1.0}}, -1, &W::skip_weights, nullptr});
  return t;
}

Tensor stack_rows(std::initializer_list<Tensor> parts) {
  check(parts.size() >= 1, "stack_rows: no tensors");
  const Tensor& first = *parts.begin();
  const char* next = static_cast<const char*>(first.data);
  int64_t rows = 0;
  for (const Tensor& t : parts) {
    check(t.ndim == 2 && t.dtype == first.dtype && t.cols() == first.cols() &&
              t.device == first.device && static_cast<const char*>(t.data) == next,
          "stack_rows: ", t.shape_str(), " ", dtype_name(t.dtype),
          " does not directly follow the tensor before it with the same columns and dtype");
    next += t.bytes();
    rows += t.rows();
  }
  return Tensor(first.data, first.dtype, {rows, first.cols()}, first.device);
}

Parameters::Parameters(Backend& backend, const GPTConfig& config, const Precision& precision)
    : backend_(backend), config_(config), precision_(precision) {
  config_.validate();
  backend.check_precision(precision);
  table_ = param_table(config_);
  auto alloc = [&backend](size_t n) { return backend.allocate(n); };
  auto release = [&backend](void* p) { backend.release(p); };
  values_ = Arena(alloc, release);
  grads_ = Arena(alloc, release);
  copies_ = Arena(alloc, release);
  for (Weights* v : {&w, &g, &c}) v->h.resize(size_t(config_.layers));
  copy_of_.assign(table_.size(), -1);
  std::vector<std::pair<int, Tensor*>> copies;  // (param, its copy's view)
  for (size_t i = 0; i < table_.size(); ++i) {
    const ParamSpec& s = table_[i];
    // c_k and c_v follow c_q with no padding: LayerWeights::qkv views the three as one.
    const bool stacked = s.field == &LayerWeights::c_k || s.field == &LayerWeights::c_v;
    auto add = [&](Arena& a, DType d, Tensor* bind) {
      if (stacked)
        a.add_adjacent(s.name, d, s.shape, bind);
      else
        a.add(s.name, d, s.shape, bind);
    };
    add(values_, precision.master, &s.view(w));
    add(grads_, precision.grad, &s.view(g));
    // Scalars are read by the kernels from their masters; matrices need compute copies.
    if (precision.has_copies() && s.group != ParamGroup::Scalar) {
      add(copies_, precision.compute, &s.view(c));
      copies.emplace_back(int(i), &s.view(c));
    }
  }
  values_.materialize(backend.device());
  grads_.materialize(backend.device());
  if (copies_.size() > 0) copies_.materialize(backend.device());
  for (size_t i = 0; i < table_.size(); ++i)
    if (!precision.has_copies() || table_[i].group == ParamGroup::Scalar)
      table_[i].view(c) = values_[int(i)];
  for (const auto& [i, view] : copies) {
    copy_of_[size_t(i)] = int(copy_pairs_.size());
    copy_pairs_.emplace_back(*view, values_[i]);
  }
  for (Weights* v : {&w, &g, &c})
    for (LayerWeights& h : v->h) h.qkv = stack_rows({h.c_q, h.c_k, h.c_v});
}

int Parameters::index(const std::string& name) const {
  for (int i = 0; i < count(); ++i)
    if (table_[size_t(i)].name == name) return i;
  fail("model has no parameter named '", name, "'");
}

int64_t Parameters::numel() const {
  int64_t n = 0;
  for (int i = 0; i < count(); ++i) n += values_[i].numel();
  return n;
}

namespace {
// The flat view from the start of `first` to the end of `last` (same arena, same dtype).
Tensor span(const Tensor& first, const Tensor& last) {
  const char* a = static_cast<const char*>(first.data);
  const char* b = static_cast<const char*>(last.data) + last.bytes();
  const int64_t n = int64_t(b - a) / int64_t(dtype_size(first.dtype));
  return Tensor(first.data, first.dtype, {n}, first.device);
}
}  // namespace

// One fill over the whole gradient arena (one dtype; the padding between tensors is zeroed
// too, harmlessly): one launch on a GPU where one per parameter took ~100.
void Parameters::zero_grad() { backend_.fill(span(grads_[0], grads_[count() - 1]), 0.0); }

Tensor Parameters::layer_grads(int64_t l) const {
  const LayerWeights& h = g.h.at(size_t(l));
  return span(h.lambdas, h.mlp_proj);  // table order: lambdas first, mlp c_proj last
}

Tensor Parameters::head_grads() const { return span(g.lm_head, g.lm_head); }

std::vector<Tensor> Parameters::other_grads() const {
  return {span(g.wte, g.wte), span(g.skip_weights, g.skip_weights)};
}

std::vector<int> Parameters::grads_within(const Tensor& span) const {
  const char* lo = static_cast<const char*>(span.data);
  const char* hi = lo + span.bytes();
  std::vector<int> out;
  for (int i = 0; i < count(); ++i) {
    const char* a = static_cast<const char*>(grads_[i].data);
    if (lo <= a && a + grads_[i].bytes() <= hi) out.push_back(i);
  }
  return out;
}


void Parameters::refresh_copies() {
  for (const auto& [copy, master] : copy_pairs_) backend_.convert(copy, master);
}

std::vector<double> Parameters::to_host_f64(int i) const { return backend_.to_host_f64(values_[i]); }

void Parameters::from_host_f64(int i, const std::vector<double>& data) {
  check(int64_t(data.size()) == values_[i].numel(), "Parameters: ", data.size(),
        " values for ", name(i), " of ", values_[i].numel());
  backend_.from_host_f64(values_[i], data);
  refresh_copy(i);
}

Tensor Parameters::copy(int i) const {
  const int k = copy_of_.at(size_t(i));
  return k < 0 ? Tensor{} : copy_pairs_[size_t(k)].first;
}

void Parameters::refresh_copy(int i) {
  if (copy_of_[size_t(i)] >= 0) {
    const auto& [copy, master] = copy_pairs_[size_t(copy_of_[size_t(i)])];
    backend_.convert(copy, master);
  }
}

void Parameters::init(uint64_t seed) {
  Rng rng(seed);
  // Host buffers reused from tensor to tensor: the memory of the largest one is touched
  // once, not every tensor's anew (page faults were most of the time on a large model).
  std::vector<double> h, u;
  for (int i = 0; i < count(); ++i) {
    const ParamSpec& s = table_[size_t(i)];
    const int64_t n = values_[i].numel();
    if (s.init.kind == InitRule::Zero) {  // on the device, no host values
      backend_.fill(values_[i], 0.0);
      refresh_copy(i);
      continue;
    }
    h.resize(size_t(n));
    switch (s.init.kind) {
      case InitRule::Zero:
        break;
      case InitRule::Normal: {
        // The uniforms are drawn in the stream's order, block by block; Box-Muller's
        // logarithm and cosine, most of the time, run in parallel on them.
        constexpr int64_t kBlock = int64_t(1) << 20;
        u.resize(size_t(2 * std::min(n, kBlock)));
        for (int64_t b = 0; b < n; b += kBlock) {
          const int64_t e = std::min(n, b + kBlock);
          for (int64_t k = 0; k < e - b; ++k) {
            u[size_t(2 * k)] = rng.uniform();
            u[size_t(2 * k + 1)] = rng.uniform();
          }
#pragma omp parallel for schedule(static) if (e - b > (int64_t(1) << 14))
          for (int64_t k = b; k < e; ++k)
            h[size_t(k)] =
                round_bf16(Rng::normal_from(u[size_t(2 * (k - b))], u[size_t(2 * (k - b) + 1)]));
        }
        break;
      }
      case InitRule::UniformFanIn: {
        const double bound = 1.0 / std::sqrt(double(s.shape.at(1)));
        for (auto& x : h) x = round_bf16(rng.uniform(-bound, bound));
        break;
      }
      case InitRule::Values:
        check(s.init.values.size() == 1 || s.init.values.size() == h.size(), "Parameters: init of ",
              s.name, " gives ", s.init.values.size(), " values for ", h.size(), " elements");
        for (size_t k = 0; k < h.size(); ++k)
          h[k] = s.init.values[s.init.values.size() == 1 ? 0 : k];
        break;
    }
    from_host_f64(i, h);
  }
}

void Parameters::save(const std::string& path,
                      const std::map<std::string, std::string>& extra_meta,
                      DType file_dtype) const {
  check(file_dtype == DType::F32 || file_dtype == DType::F64 || file_dtype == DType::BF16,
        "weights ", path, ": cannot write dtype ", dtype_name(file_dtype),
        "; choose F32, F64 or BF16");
  // One host buffer per tensor, in the file's dtype.
  std::vector<std::vector<uint8_t>> host(static_cast<size_t>(count()));
  std::vector<TensorRecord> recs;
  for (int i = 0; i < count(); ++i) {
    const auto d = to_host_f64(i);
    auto& buf = host[size_t(i)];
    buf.resize(d.size() * dtype_size(file_dtype));
    for (size_t k = 0; k < d.size(); ++k) {
      if (file_dtype == DType::F64) {
        std::memcpy(buf.data() + 8 * k, &d[k], 8);
      } else if (file_dtype == DType::F32) {
        const float f = float(d[k]);
        std::memcpy(buf.data() + 4 * k, &f, 4);
      } else {
        const uint16_t b = bf16_bits(float(d[k]));
        std::memcpy(buf.data() + 2 * k, &b, 2);
      }
    }
    TensorRecord r;
    r.name = name(i);
    r.dtype = file_dtype;
    r.shape = table_[size_t(i)].shape;
    r.data = buf.data();
    recs.push_back(std::move(r));
  }
  auto meta = config_.to_metadata();
  for (const auto& [k, v] : extra_meta) meta[k] = v;
  write_safetensors(path, recs, meta);
}

void Parameters::load(const std::string& path) {
  SafetensorsFile f = SafetensorsFile::open(path);
  // Heads x head dim is only the width to the tensors: the split is in the metadata.
  const auto& meta = f.metadata();
  if (meta.count("format") && meta.at("format") == "speedrun-gpt") {
    const GPTConfig was = GPTConfig::from_metadata(meta, path);
    check(was.heads == config_.heads && was.head_dim == config_.head_dim, "weights ", path,
          ": written for ", was.heads, " heads of ", was.head_dim, ", this model has ",
          config_.heads, " of ", config_.head_dim, " (the same tensor shapes, another "
          "attention): give --heads ", was.heads, " --head-dim ", was.head_dim);
  }
  for (const auto& n : f.names()) {
    bool known = false;
    for (int i = 0; i < count() && !known; ++i) known = (name(i) == n);
    check(known, "weights ", path, ": tensor '", n,
          "' is not a parameter of this model (layers ", config_.layers,
          "): the file was written for another shape");
  }
  for (int i = 0; i < count(); ++i) {
    const std::vector<int64_t>& want = table_[size_t(i)].shape;
    check(f.has(name(i)), "weights ", path, ": missing tensor '", name(i),
          "': the file was written for another model shape");
    auto v = f.get(name(i));
    if (v.shape != want)
      fail("weights ", path, ": tensor '", name(i), "' has shape ", weights_shape_text(v.shape),
           " but the model needs ", weights_shape_text(want), ": check --layers/--heads/--head-dim/--vocab");
    std::vector<double> h(size_t(values_[i].numel()));
    // Element by element through memcpy: a file whose header is not padded to 8 bytes (the
    // format allows it) leaves the data unaligned for its dtype.
    const auto* bytes = static_cast<const unsigned char*>(v.data);
    const auto read = [&](auto x) {
      for (size_t k = 0; k < h.size(); ++k) {
        std::memcpy(&x, bytes + k * sizeof x, sizeof x);
        if constexpr (std::is_same_v<decltype(x), uint16_t>) h[k] = bf16_to_float(x);
        else h[k] = double(x);
      }
    };
    if (v.dtype == DType::F32) {
      read(float());
    } else if (v.dtype == DType::F64) {
      read(double());
    } else if (v.dtype == DType::BF16) {
      read(uint16_t());
    } else {
      fail("weights ", path, ": tensor '", name(i), "' has dtype ", dtype_name(v.dtype),
           "; expected F32, F64 or BF16");
    }
    for (double x : h)
      check(std::isfinite(x), "weights ", path, ": tensor '", name(i),
            "' holds a NaN or infinite value");
    from_host_f64(i, h);
  }
}

}  // namespace speedrun
