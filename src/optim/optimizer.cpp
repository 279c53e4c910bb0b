#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

namespace speedrun {

void OptimConfig::validate() const {
  check(lr_embed >= 0 && lr_head >= 0 && lr_scalar >= 0 && muon_lr >= 0,
        "learning rates must be >= 0");
  check(beta1 >= 0 && beta1 < 1, "--adam-beta1 ", beta1, ": must be in [0, 1)");
  check(beta2 >= 0 && beta2 < 1, "--adam-beta2 ", beta2, ": must be in [0, 1)");
  check(eps > 0, "--adam-eps ", eps, ": must be > 0");
  check(ns_steps >= 1, "--ns-steps ", ns_steps, ": must be >= 1");
}

Optimizer::Optimizer(Backend& backend, Parameters& params, const OptimConfig& config)
    : be_(backend), p_(params), cfg_(config) {
  cfg_.validate();
  state_ = Arena([&backend](size_t n) { return backend.allocate(n); },
                 [&backend](void* p) { backend.release(p); });
  const int n = params.count();
  adam_m_.assign(n, -1);
  adam_v_.assign(n, -1);
  muon_buf_.assign(n, -1);
  int64_t largest = 1;
  for (int i = 0; i < n; ++i) {
    const Tensor& t = params.value(i);
    auto shape_of = [&](const std::string& name) {
      if (t.ndim == 0) return state_.add(name, t.dtype, {});
      if (t.ndim == 1) return state_.add(name, t.dtype, {t.shape[0]});
      return state_.add(name, t.dtype, {t.shape[0], t.shape[1]});
    };
    if (params.group(i) == ParamGroup::Matrix) {
      muon_buf_[i] = shape_of(params.name(i) + ".momentum_buffer");
      largest = std::max(largest, t.numel());
    } else {
      adam_m_[i] = shape_of(params.name(i) + ".exp_avg");
      adam_v_[i] = shape_of(params.name(i) + ".exp_avg_sq");
    }
  }
  const int i_scratch = state_.add("muon.scratch", params.dtype(), {largest});
  state_.materialize(backend.device());
  scratch_ = state_[i_scratch];
}

void Optimizer::step(double lr_mult, double momentum) {
  ++t_;
  for (int i = 0; i < p_.count(); ++i) {
    const Tensor& p = p_.value(i);
    const Tensor& g = p_.grad(i);
    switch (p_.group(i)) {
      case ParamGroup::Embed:
      case ParamGroup::Head:
      case ParamGroup::Scalar: {
        const double base = p_.group(i) == ParamGroup::Embed  ? cfg_.lr_embed
                            : p_.group(i) == ParamGroup::Head ? cfg_.lr_head
                                                              : cfg_.lr_scalar;
        AdamArgs a;
        a.lr = base * lr_mult;
        a.beta1 = cfg_.beta1;
        a.beta2 = cfg_.beta2;
        a.eps = cfg_.eps;
        a.step = t_;
        be_.adam_step(p, g, state_[adam_m_[i]], state_[adam_v_[i]], a);
        break;
      }
      case ParamGroup::Matrix: {
        const int64_t rows = p.dim(0), cols = p.dim(1);
        be_.muon_momentum(g, state_[muon_buf_[i]], g, momentum);  // g <- Nesterov update
        Tensor X = scratch_.slice(0, rows * cols).view({rows, cols});
        be_.newton_schulz(X, g, cfg_.ns_steps, cfg_.ns_bf16);
        const double scale = std::sqrt(std::max(1.0, double(rows) / double(cols)));
        be_.axpy(p, X, -cfg_.muon_lr * lr_mult * scale);
        break;
      }
    }
  }
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int i = 0; i < state_.size(); ++i)
    if (state_.name(i) != "muon.scratch") out.emplace_back(state_.name(i), state_[i]);
  return out;
}

}  // namespace speedrun
