#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

namespace speedrun {

Optimizer::Optimizer(Backend& backend, Parameters& params, const OptimConfig& config,
                     Comm* comm)
    : be_(backend), p_(params), cfg_(config), comm_(comm) {
  auto alloc = [&backend](size_t n) { return backend.allocate(n); };
  auto release = [&backend](void* p) { backend.release(p); };
  state_ = Arena(alloc, release);
  updates_ = Arena(alloc, release);
  const int n = params.count();
  const int world = comm ? comm->size() : 1;
  const DType master = params.precision().master, grad = params.precision().grad;
  slots_.resize(size_t(n));
  int matrices = 0;
  for (int i = 0; i < n; ++i) {
    const Tensor& t = params.value(i);
    std::vector<int64_t> shape(t.shape.begin(), t.shape.begin() + t.ndim);
    Slot& s = slots_[size_t(i)];
    if (params.group(i) == ParamGroup::Matrix) {
      state_.add(params.name(i) + ".momentum_buffer", master, shape, &s.buf);
      updates_.add(params.name(i) + ".update", grad, shape, &s.update);
      s.owner = matrices++ % world;
    } else {
      state_.add(params.name(i) + ".exp_avg", master, shape, &s.m);
      state_.add(params.name(i) + ".exp_avg_sq", master, shape, &s.v);
    }
  }
  state_.materialize(backend.device());
  if (updates_.size() > 0) updates_.materialize(backend.device());
}

int Optimizer::muon_owner(int i) const { return slots_.at(size_t(i)).owner; }

void Optimizer::step(double lr_mult, double momentum) {
  ++t_;
  const int rank = comm_ ? comm_->rank() : 0, world = comm_ ? comm_->size() : 1;
  for (int i = 0; i < p_.count(); ++i) {
    const Tensor& p = p_.value(i);
    const Tensor& g = p_.grad(i);
    Slot& s = slots_[size_t(i)];
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
        be_.adam_step(p, g, s.m, s.v, a);
        break;
      }
      case ParamGroup::Matrix: {
        be_.muon_momentum(g, s.buf, g, momentum);  // g <- Nesterov update
        if (s.owner == rank)
          be_.newton_schulz(s.update, g, cfg_.ns_steps, cfg_.ns_bf16);
        else
          be_.fill(s.update, 0.0);
        break;
      }
    }
  }
  if (world > 1) comm_->all_reduce(updates_.flat(), ReduceOp::Sum);
  for (int i = 0; i < p_.count(); ++i) {
    if (p_.group(i) != ParamGroup::Matrix) continue;
    const Tensor& p = p_.value(i);
    const double rows = double(p.dim(0)), cols = double(p.dim(1));
    const double scale = std::sqrt(std::max(1.0, rows / cols));
    be_.axpy(p, slots_[size_t(i)].update, -cfg_.muon_lr * lr_mult * scale);
  }
  p_.refresh_copies();
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int i = 0; i < state_.size(); ++i) out.emplace_back(state_.name(i), state_[i]);
  return out;
}

}  // namespace speedrun
