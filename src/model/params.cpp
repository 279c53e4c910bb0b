#include "model/params.h"

#include <cmath>
#include <cstring>

#include "core/bf16.h"
#include "core/rng.h"
#include "core/safetensors.h"

namespace speedrun {

Parameters::Parameters(Backend& backend, const GPTConfig& config, DType dtype)
    : backend_(backend), config_(config), dtype_(dtype) {
  config_.validate();
  const int64_t C = config_.width(), F = config_.hidden(), V = config_.vocab;
  const int64_t L = config_.layers;
  auto alloc = [&backend](size_t n) { return backend.allocate(n); };
  auto release = [&backend](void* p) { backend.release(p); };
  values_ = Arena(alloc, release);
  grads_ = Arena(alloc, release);
  auto add = [&](const std::string& name, ParamGroup grp, std::initializer_list<int64_t> shape) {
    values_.add(name, dtype, shape);
    grads_.add(name, dtype, shape);
    groups_.push_back(grp);
  };
  add("transformer.wte.weight", ParamGroup::Embed, {V, C});
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    add(p + "lambdas", ParamGroup::Scalar, {2});
    add(p + "attn.lamb", ParamGroup::Scalar, {});
    add(p + "attn.c_q.weight", ParamGroup::Matrix, {C, C});
    add(p + "attn.c_k.weight", ParamGroup::Matrix, {C, C});
    add(p + "attn.c_v.weight", ParamGroup::Matrix, {C, C});
    add(p + "attn.c_proj.weight", ParamGroup::Matrix, {C, C});
    add(p + "mlp.c_fc.weight", ParamGroup::Matrix, {F, C});
    add(p + "mlp.c_proj.weight", ParamGroup::Matrix, {C, F});
  }
  add("lm_head.weight", ParamGroup::Head, {V, C});
  add("skip_weights", ParamGroup::Scalar, {L / 2});
  values_.materialize(backend.device());
  grads_.materialize(backend.device());

  auto bind = [&](const Arena& a, Weights& w) {
    int k = 0;
    w.wte = a[k++];
    w.h.resize(L);
    for (auto& l : w.h) {
      l.lambdas = a[k++];
      l.lamb = a[k++];
      l.c_q = a[k++];
      l.c_k = a[k++];
      l.c_v = a[k++];
      l.c_proj = a[k++];
      l.c_fc = a[k++];
      l.mlp_proj = a[k++];
    }
    w.lm_head = a[k++];
    w.skip_weights = a[k++];
  };
  bind(values_, w);
  bind(grads_, g);
}

int Parameters::index(const std::string& name) const {
  for (int i = 0; i < count(); ++i)
    if (values_.name(i) == name) return i;
  fail("model has no parameter named '", name, "'");
}

int64_t Parameters::numel() const {
  int64_t n = 0;
  for (int i = 0; i < count(); ++i) n += values_[i].numel();
  return n;
}

void Parameters::zero_grad() {
  for (int i = 0; i < count(); ++i) backend_.fill(grads_[i], 0.0);
}

std::vector<double> Parameters::to_host_f64(int i) const {
  const Tensor& t = values_[i];
  std::vector<double> out(size_t(t.numel()));
  if (t.dtype == DType::F64) {
    backend_.download(out.data(), t);
  } else if (t.dtype == DType::F32) {
    std::vector<float> tmp(out.size());
    backend_.download(tmp.data(), t);
    for (size_t k = 0; k < tmp.size(); ++k) out[k] = tmp[k];
  } else {
    fail("Parameters: unsupported parameter dtype ", dtype_name(t.dtype));
  }
  return out;
}

void Parameters::from_host_f64(int i, const std::vector<double>& data) {
  const Tensor& t = values_[i];
  check(int64_t(data.size()) == t.numel(), "Parameters: size mismatch for ", name(i));
  if (t.dtype == DType::F64) {
    backend_.upload(t, data.data());
  } else if (t.dtype == DType::F32) {
    std::vector<float> tmp(data.begin(), data.end());
    backend_.upload(t, tmp.data());
  } else {
    fail("Parameters: unsupported parameter dtype ", dtype_name(t.dtype));
  }
}

void Parameters::init(uint64_t seed) {
  Rng rng(seed);
  for (int i = 0; i < count(); ++i) {
    const Tensor& t = values_[i];
    const std::string& n = name(i);
    std::vector<double> h(size_t(t.numel()), 0.0);
    auto ends_with = [&](const char* s) {
      size_t m = std::strlen(s);
      return n.size() >= m && n.compare(n.size() - m, m, s) == 0;
    };
    if (n == "transformer.wte.weight") {
      for (auto& x : h) x = round_bf16(rng.normal());
    } else if (ends_with("c_q.weight") || ends_with("c_k.weight") || ends_with("c_v.weight") ||
               ends_with("c_fc.weight")) {
      const double bound = 1.0 / std::sqrt(double(t.dim(1)));
      for (auto& x : h) x = round_bf16(rng.uniform(-bound, bound));
    } else if (ends_with("lambdas")) {
      h = {1.0, 0.0};
    } else if (ends_with("lamb")) {
      h = {0.5};
    } else if (n == "skip_weights") {
      for (auto& x : h) x = 1.0;
    }  // c_proj, mlp.c_proj, lm_head: zero
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
  std::vector<std::vector<uint8_t>> host(count());
  std::vector<TensorRecord> recs;
  for (int i = 0; i < count(); ++i) {
    const auto d = to_host_f64(i);
    auto& buf = host[i];
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
    const Tensor& t = values_[i];
    TensorRecord r;
    r.name = name(i);
    r.dtype = file_dtype;
    for (int k = 0; k < t.ndim; ++k) r.shape.push_back(t.shape[k]);
    r.data = buf.data();
    recs.push_back(std::move(r));
  }
  auto meta = config_.to_metadata();
  for (const auto& [k, v] : extra_meta) meta[k] = v;
  write_safetensors(path, recs, meta);
}

void Parameters::load(const std::string& path) {
  SafetensorsFile f = SafetensorsFile::open(path);
  for (const auto& n : f.names()) {
    bool known = false;
    for (int i = 0; i < count() && !known; ++i) known = (name(i) == n);
    check(known, "weights ", path, ": tensor '", n,
          "' is not a parameter of this model (layers ", config_.layers,
          "): the file was written for another shape");
  }
  for (int i = 0; i < count(); ++i) {
    const Tensor& t = values_[i];
    check(f.has(name(i)), "weights ", path, ": missing tensor '", name(i),
          "': the file was written for another model shape");
    auto v = f.get(name(i));
    std::vector<int64_t> want;
    for (int k = 0; k < t.ndim; ++k) want.push_back(t.shape[k]);
    if (v.shape != want) {
      std::string got = "[", exp = "[";
      for (size_t k = 0; k < v.shape.size(); ++k) got += (k ? "," : "") + std::to_string(v.shape[k]);
      for (size_t k = 0; k < want.size(); ++k) exp += (k ? "," : "") + std::to_string(want[k]);
      fail("weights ", path, ": tensor '", name(i), "' has shape ", got, "] but the model needs ",
           exp, "]: check --layers/--heads/--head-dim/--vocab");
    }
    std::vector<double> h(size_t(t.numel()));
    if (v.dtype == DType::F32) {
      const float* p = static_cast<const float*>(v.data);
      for (size_t k = 0; k < h.size(); ++k) h[k] = p[k];
    } else if (v.dtype == DType::F64) {
      const double* p = static_cast<const double*>(v.data);
      for (size_t k = 0; k < h.size(); ++k) h[k] = p[k];
    } else if (v.dtype == DType::BF16) {
      const uint16_t* p = static_cast<const uint16_t*>(v.data);
      for (size_t k = 0; k < h.size(); ++k) h[k] = bf16_to_float(p[k]);
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
