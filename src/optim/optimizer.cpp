#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"

namespace speedrun {

Optimizer::Optimizer(Backend& backend, Parameters& params, const OptimConfig& config,
                     Comm* comm)
    : be_(backend), p_(params), cfg_(config), comm_(comm) {
  auto alloc = [&backend](size_t n) { return backend.allocate(n); };
  auto release = [&backend](void* p) { backend.release(p); };
  state_ = Arena(alloc, release);
  updates_ = Arena(alloc, release);
  inputs_ = Arena(alloc, release);
  wire_ = Arena(alloc, release);
  const int n = params.count();
  const int world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const DType master = params.precision().master, grad = params.precision().grad;
  slots_.resize(size_t(n));
  std::vector<int> muon;  // Muon parameters in table order
  for (int i = 0; i < n; ++i) {
    const Tensor& t = params.value(i);
    std::vector<int64_t> shape(t.shape.begin(), t.shape.begin() + t.ndim);
    Slot& s = slots_[size_t(i)];
    if (params.group(i) == ParamGroup::Matrix) {
      state_.add(params.name(i) + ".momentum_buffer", master, shape, &s.buf);
      s.owner = int(muon.size()) % world;
      muon.push_back(i);
    } else {
      state_.add(params.name(i) + ".exp_avg", master, shape, &s.m);
      state_.add(params.name(i) + ".exp_avg_sq", master, shape, &s.v);
    }
  }
  // Shapes in order of first appearance; per shape one stack per owner, each matrix a
  // slice of its owner's stack in table order.
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int i : muon) {
    const std::pair<int64_t, int64_t> rc{params.value(i).dim(0), params.value(i).dim(1)};
    if (std::find(shapes.begin(), shapes.end(), rc) == shapes.end()) shapes.push_back(rc);
  }
  struct Planned {
    std::vector<int> members;  // parameters, table order
    Tensor update, input;      // [n, rows, cols]; input only for this rank's stacks
    Tensor wire;               // the update's BF16 copy, where exchanged so
    bool mine = false;
  };
  const bool wire = world > 1 && backend.newton_schulz_is_bf16();
  std::vector<Planned> plan;
  for (const auto& [rows, cols] : shapes)
    for (int r = 0; r < world; ++r) {
      Planned pl;
      for (int i : muon)
        if (params.value(i).dim(0) == rows && params.value(i).dim(1) == cols &&
            slots_[size_t(i)].owner == r)
          pl.members.push_back(i);
      if (pl.members.empty()) continue;
      pl.mine = r == rank;
      plan.push_back(std::move(pl));
    }
  for (Planned& pl : plan) {
    const int64_t count = int64_t(pl.members.size());
    const int64_t rows = params.value(pl.members[0]).dim(0), cols = params.value(pl.members[0]).dim(1);
    const std::string name = fmt::format("muon.{}x{}.rank{}", rows, cols,
                                         slots_[size_t(pl.members[0])].owner);
    updates_.add(name + ".update", grad, {count, rows, cols}, &pl.update);
    if (wire) wire_.add(name + ".wire", DType::BF16, {count, rows, cols}, &pl.wire);
    if (pl.mine) inputs_.add(name + ".input", grad, {count, rows, cols}, &pl.input);
  }
  state_.materialize(backend.device());
  if (updates_.size() > 0) updates_.materialize(backend.device());
  if (wire_.size() > 0) wire_.materialize(backend.device());
  if (inputs_.size() > 0) inputs_.materialize(backend.device());
  for (const Planned& pl : plan) {
    for (size_t k = 0; k < pl.members.size(); ++k) {
      Slot& s = slots_[size_t(pl.members[k])];
      s.update = pl.update.slice(int64_t(k), int64_t(k) + 1).view({pl.update.dim(1), pl.update.dim(2)});
      if (pl.mine) s.input = pl.input.slice(int64_t(k), int64_t(k) + 1).view({pl.input.dim(1), pl.input.dim(2)});
    }
    if (pl.mine)
      stacks_.push_back({pl.input, pl.update, pl.members, pl.wire});
    else
      others_.push_back({pl.update, pl.wire});
  }
}

int Optimizer::muon_owner(int i) const { return slots_.at(size_t(i)).owner; }

void Optimizer::step(double lr_mult, double momentum, const std::vector<int64_t>& ready) {
  check(ready.empty() || (comm_ && int(ready.size()) == p_.count()), "Optimizer::step: ",
        ready.size(), " gradient tickets for ", p_.count(), " parameters",
        comm_ ? "" : " without a Comm");
  ++t_;
  const int rank = comm_ ? comm_->rank() : 0, world = comm_ ? comm_->size() : 1;
  // The latest ticket waited for: the reductions finish in ticket order, so waiting for
  // one covers every earlier one.
  int64_t waited = -1;
  auto arrived = [&](int i) -> int64_t { return ready.empty() ? -1 : ready[size_t(i)]; };
  auto await = [&](int i) {
    const int64_t t = arrived(i);
    if (t <= waited) return;
    comm_->wait_async(t);
    waited = t;
  };
  // Parameters (of a group) ordered by when their gradients arrive, ties in table order.
  auto by_arrival = [&](auto&& pick) {
    std::vector<int> out;
    for (int i = 0; i < p_.count(); ++i)
      if (pick(i)) out.push_back(i);
    std::stable_sort(out.begin(), out.end(), [&](int a, int b) { return arrived(a) < arrived(b); });
    return out;
  };

  // 1. This rank's Newton-Schulz stacks, each once its matrices' gradients are in.
  std::vector<const Stack*> stacks;
  for (const Stack& st : stacks_) stacks.push_back(&st);
  auto last = [&](const Stack* st) {
    int64_t t = -1;
    for (int i : st->members) t = std::max(t, arrived(i));
    return t;
  };
  std::stable_sort(stacks.begin(), stacks.end(),
                   [&](const Stack* a, const Stack* b) { return last(a) < last(b); });
  for (const Stack* st : stacks) {
    for (int i : st->members) {
      await(i);
      Slot& s = slots_[size_t(i)];
      be_.muon_momentum(s.input, s.buf, p_.grad(i), momentum);  // Nesterov into the stack
    }
    be_.newton_schulz(st->update, st->input, cfg_.ns_steps, cfg_.ns_bf16);
  }
  // 2. The other ranks' matrices: every rank keeps every momentum buffer (the Nesterov
  // value is written over g and not used).
  for (int i : by_arrival([&](int i) {
         return p_.group(i) == ParamGroup::Matrix && slots_[size_t(i)].owner != rank;
       })) {
    await(i);
    be_.muon_momentum(p_.grad(i), slots_[size_t(i)].buf, p_.grad(i), momentum);
  }
  // 3. The updates to every rank: each slot holds its owner's value and zeros elsewhere,
  // so the sum is exact. It runs while Adam does.
  int64_t exchange = -1;
  const bool wire = wire_.size() > 0;
  if (world > 1) {
    if (wire)
      for (const Stack& st : stacks_) be_.convert(st.wire, st.update);
    for (const Other& o : others_) be_.fill(wire ? o.wire : o.update, 0.0);
    exchange = comm_->all_reduce_async(wire ? wire_.flat() : updates_.flat(), ReduceOp::Sum);
  }
  // 4. Adam on wte, lm_head and the scalars.
  for (int i : by_arrival([&](int i) { return p_.group(i) != ParamGroup::Matrix; })) {
    await(i);
    const double base = p_.group(i) == ParamGroup::Embed  ? cfg_.lr_embed
                        : p_.group(i) == ParamGroup::Head ? cfg_.lr_head
                                                          : cfg_.lr_scalar;
    AdamArgs a;
    a.lr = base * lr_mult;
    a.beta1 = cfg_.beta1;
    a.beta2 = cfg_.beta2;
    a.eps = cfg_.eps;
    a.step = t_;
    Slot& s = slots_[size_t(i)];
    be_.adam_step(p_.value(i), p_.grad(i), s.m, s.v, a);
  }
  // 5. The Muon updates, once every reduction (the exchange last) is done: nothing of this
  // step still runs on the Comm's stream after this.
  if (exchange >= 0 || !ready.empty()) comm_->wait_async(Comm::kAllAsync);
  if (wire)
    for (const Other& o : others_) be_.convert(o.update, o.wire);
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
