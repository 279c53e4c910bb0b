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
  // Owner-major update buffer: rank r's part is [r * part, (r + 1) * part); in it one stack
  // per shape (shapes in order of first appearance), each matrix a slice of its stack in
  // table order. Stacks start at multiples of kAlign elements (64-byte aligned in any
  // dtype of 2 bytes or more) and every part is padded to the longest, so one in-place
  // all-gather of equal parts exchanges the updates.
  constexpr int64_t kAlign = 32;
  auto align = [](int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int i : muon) {
    const std::pair<int64_t, int64_t> rc{params.value(i).dim(0), params.value(i).dim(1)};
    if (std::find(shapes.begin(), shapes.end(), rc) == shapes.end()) shapes.push_back(rc);
  }
  struct Planned {
    int owner = 0;
    int64_t rows = 0, cols = 0, offset = 0;  // offset: elements into the owner's part
    std::vector<int> members;                // parameters, table order
  };
  std::vector<Planned> plan;
  int64_t part = 0;
  for (int r = 0; r < world; ++r) {
    int64_t offset = 0;
    for (const auto& [rows, cols] : shapes) {
      Planned pl{r, rows, cols, offset, {}};
      for (int i : muon)
        if (params.value(i).dim(0) == rows && params.value(i).dim(1) == cols &&
            slots_[size_t(i)].owner == r)
          pl.members.push_back(i);
      if (pl.members.empty()) continue;
      offset = align(offset + int64_t(pl.members.size()) * rows * cols);
      plan.push_back(std::move(pl));
    }
    part = std::max(part, offset);
  }
  // Where the Newton-Schulz values are bf16 (a GPU), the buffer holds them in BF16: the
  // Newton-Schulz writes them as they are, every rank gathers half the bytes, and
  // muon_apply reads bf16 updates.
  Tensor update_buffer;
  const DType update_dtype = backend.newton_schulz_is_bf16() ? DType::BF16 : grad;
  if (part > 0) updates_.add("muon.update", update_dtype, {int64_t(world) * part}, &update_buffer);
  // The Nesterov values' stacks, where the backend reads them from memory (muon_stack).
  std::vector<Tensor> inputs(plan.size());
  for (size_t k = 0; k < plan.size(); ++k)
    if (plan[k].owner == rank && backend.muon_stack_needs_input())
      inputs_.add(fmt::format("muon.{}x{}.input", plan[k].rows, plan[k].cols), grad,
                  {int64_t(plan[k].members.size()), plan[k].rows, plan[k].cols}, &inputs[k]);
  state_.materialize(backend.device());
  if (updates_.size() > 0) updates_.materialize(backend.device());
  if (inputs_.size() > 0) inputs_.materialize(backend.device());
  exchange_ = update_buffer;
  for (size_t k = 0; k < plan.size(); ++k) {
    const Planned& pl = plan[k];
    const int64_t n = int64_t(pl.members.size()), begin = pl.owner * part + pl.offset;
    const Tensor update =
        update_buffer.slice(begin, begin + n * pl.rows * pl.cols).view({n, pl.rows, pl.cols});
    for (size_t m = 0; m < pl.members.size(); ++m)
      slots_[size_t(pl.members[m])].update =
          update.slice(int64_t(m), int64_t(m) + 1).view({pl.rows, pl.cols});
    if (pl.owner == rank) stacks_.push_back({inputs[k], update, pl.members});
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
    std::vector<Tensor> bufs, grads;
    for (int i : st->members) {
      await(i);
      bufs.push_back(slots_[size_t(i)].buf);
      grads.push_back(p_.grad(i));
    }
    // Nesterov into the stack (or straight into the Newton-Schulz), then orthogonalised.
    be_.muon_stack(st->update, st->input, bufs, grads, momentum, cfg_.ns_steps, cfg_.ns_bf16);
  }
  // 2. The other ranks' matrices: every rank keeps every momentum buffer (their Nesterov
  // values are not needed). One call over the matrices whose gradients are in, another
  // before each wait.
  std::vector<Tensor> bufs, grads;
  auto momenta = [&] {
    if (!bufs.empty()) be_.muon_momenta(bufs, grads, momentum);
    bufs.clear();
    grads.clear();
  };
  for (int i : by_arrival([&](int i) {
         return p_.group(i) == ParamGroup::Matrix && slots_[size_t(i)].owner != rank;
       })) {
    if (arrived(i) > waited) momenta();
    await(i);
    bufs.push_back(slots_[size_t(i)].buf);
    grads.push_back(p_.grad(i));
  }
  momenta();
  // 3. The updates to every rank: each rank's part of the buffer to the others, gathered in
  // place (every value is copied, so it is exact). It runs while Adam does.
  int64_t exchange = -1;
  if (world > 1 && exchange_.data != nullptr) exchange = comm_->all_gather_async(exchange_);
  // 4. Adam on wte, lm_head and the scalars (and their compute copies): one call over the
  // parameters whose gradients are in, another before each wait (on one rank, or once the
  // blocks' gradients are in: one call, then wte's, reduced last, with skip_weights').
  AdamArgs a;
  a.beta1 = cfg_.beta1;
  a.beta2 = cfg_.beta2;
  a.eps = cfg_.eps;
  a.step = t_;
  std::vector<AdamTensor> adam;
  auto flush = [&] {
    if (!adam.empty()) be_.adam_steps(adam, a);
    adam.clear();
  };
  for (int i : by_arrival([&](int i) { return p_.group(i) != ParamGroup::Matrix; })) {
    if (arrived(i) > waited) flush();
    await(i);
    const double base = p_.group(i) == ParamGroup::Embed  ? cfg_.lr_embed
                        : p_.group(i) == ParamGroup::Head ? cfg_.lr_head
                                                          : cfg_.lr_scalar;
    const Slot& s = slots_[size_t(i)];
    adam.push_back({p_.value(i), p_.grad(i), s.m, s.v, p_.copy(i), base * lr_mult});
  }
  flush();
  // 5. The Muon updates, once every reduction (the exchange last) is done: nothing of this
  // step still runs on the Comm's stream after this.
  if (exchange >= 0 || !ready.empty()) comm_->wait_async(Comm::kAllAsync);
  // Every matrix's update and its compute copy in one call.
  std::vector<MuonApply> apply;
  for (int i = 0; i < p_.count(); ++i) {
    if (p_.group(i) != ParamGroup::Matrix) continue;
    const Tensor& p = p_.value(i);
    const double rows = double(p.dim(0)), cols = double(p.dim(1));
    const double scale = std::sqrt(std::max(1.0, rows / cols));
    apply.push_back({p, slots_[size_t(i)].update, p_.copy(i), -cfg_.muon_lr * lr_mult * scale});
  }
  if (!apply.empty()) be_.muon_apply(apply);
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int i = 0; i < state_.size(); ++i) out.emplace_back(state_.name(i), state_[i]);
  return out;
}

}  // namespace speedrun
