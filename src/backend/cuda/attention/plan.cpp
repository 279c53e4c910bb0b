#include "backend/cuda/attention/plan.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "core/error.h"

namespace speedrun::cuda::attn {

const char* tiling_name(Tiling t) { return t == Tiling::kWide ? "wide" : "narrow"; }
const char* forward_kernel_name(ForwardKernel k) { return k == ForwardKernel::kMma ? "mma" : "wgmma"; }
const char* backward_kernel_name(BackwardKernel k) { return k == BackwardKernel::kMma ? "mma" : "wgmma"; }
const char* item_order_name(ItemOrder o) { return o == ItemOrder::kLongestFirst ? "longest" : "tiles"; }
KernelShape forward_shape(int D, Tiling t) {
  return {kThreads, kTile, fwd_chunk(D, t), fwd_smem(D, t)};
}
KernelShape dq_shape(int D, Tiling t) { return {kThreads, kTile, dq_chunk(D, t), dq_smem(D, t)}; }
KernelShape dkv_shape(int D, Tiling t) {
  return {kThreads, kTile, dkv_chunk(D, t), dkv_smem(D, t)};
}
size_t max_smem(Tiling t) {
  size_t m = 0;
  for (int D : {64, 128}) m = std::max({m, fwd_smem(D, t), dq_smem(D, t), dkv_smem(D, t)});
  return m;
}
Tiling tiling_for(size_t smem_per_block_optin, const char* gpu) {
  if (max_smem(Tiling::kWide) <= smem_per_block_optin) return Tiling::kWide;
  check(max_smem(Tiling::kNarrow) <= smem_per_block_optin, "cuda attention: ", gpu, " lets a block have ",
        smem_per_block_optin, " bytes of shared memory; the attention kernels need ",
        max_smem(Tiling::kNarrow), " (", max_smem(Tiling::kWide),
        " for their wider chunks): a GPU of sm_80 or newer has that; use --device cpu here");
  return Tiling::kNarrow;
}
bool supported_head_dim(int64_t D) { return D == 64 || D == 128; }

namespace {

size_t align16(size_t x) { return (x + 15) & ~size_t(15); }

// The sections' offsets and the whole size, from B, T and the counts.
void place_sections(PlanLayout& L) {
  size_t at = 0;
  L.q_items = at;
  at = align16(at + size_t(L.n_q_items) * sizeof(WorkItem));
  L.k_items = at;
  at = align16(at + size_t(L.n_k_items) * sizeof(WorkItem));
  L.q_list = at;
  at = align16(at + size_t(L.n_entries) * 4);
  L.k_list = at;
  at = align16(at + size_t(L.n_entries) * 4);
  L.lo = at;
  at = align16(at + size_t(L.B * L.T) * 4);
  L.bytes = at;
}

// Whether tile t of a sequence of T tokens has all kTile rows.
bool complete(int64_t t, int64_t T) { return (t + 1) * kTile <= T; }

}  // namespace

PlanLayout plan_layout(const char* op, const std::vector<BlockMask>& masks) {
  check(!masks.empty(), op, ": no masks; pass one BlockMask per sequence");
  PlanLayout L;
  L.B = int64_t(masks.size());
  L.T = masks[0].T;
  check(L.T >= 1 && L.T <= INT32_MAX, op, ": T = ", L.T, " is out of range [1, 2^31)");
  for (int64_t b = 0; b < L.B; ++b) {
    const BlockMask& m = masks[size_t(b)];
    check(m.T == L.T, op, ": mask of sequence ", b, " has T = ", m.T, " but sequence 0 has T = ",
          L.T, "; all sequences of a call have one length");
    check(m.tile == kTile, op, ": mask of sequence ", b, " has ", m.tile,
          "-token tiles; the CUDA kernels walk ", kTile, "-token tiles: build the masks with tile ",
          kTile, " (the model's attn-tile 0 takes the backend's)");
    const int64_t nb = m.num_blocks();
    const size_t nnz = m.q_kv.size();
    const bool ok = m.window >= 1 && int64_t(m.doc.size()) == m.T &&
                    int64_t(m.q_ptr.size()) == nb + 1 && int64_t(m.k_ptr.size()) == nb + 1 &&
                    m.q_ptr[0] == 0 && m.k_ptr[0] == 0 && size_t(m.q_ptr[size_t(nb)]) == nnz &&
                    size_t(m.k_ptr[size_t(nb)]) == nnz && m.q_full.size() == nnz &&
                    m.k_q.size() == nnz && m.k_full.size() == nnz;
    check(ok, op, ": mask of sequence ", b, " is malformed; build it with build_block_mask");
    for (size_t e = 0; e < nnz; ++e)
      check(m.q_kv[e] >= 0 && m.q_kv[e] < nb && m.k_q[e] >= 0 && m.k_q[e] < nb, op,
            ": mask of sequence ", b, " lists a tile outside [0, ", nb,
            "); build it with build_block_mask");
    // Every tile sees at least its diagonal tile (j = i is visible for any window >= 1). The
    // kernels rely on it: a tile with an empty list would store its output before the copy of
    // its own resident tile had been waited for.
    for (size_t t = 0; t < size_t(nb); ++t)
      check(m.q_ptr[t + 1] > m.q_ptr[t] && m.k_ptr[t + 1] > m.k_ptr[t], op, ": mask of sequence ",
            b, " lists no partner for tile ", t,
            " (every tile sees its diagonal); build it with build_block_mask");
    L.n_q_items += nb;
    L.n_entries += int64_t(nnz);
  }
  check(L.n_entries <= INT32_MAX && L.n_q_items * kTile <= INT32_MAX, op,
        ": the masks list more than 2^31 tiles; split the micro-batch");
  L.n_k_items = L.n_q_items;
  place_sections(L);
  return L;
}

size_t plan_bytes_bound(int64_t B, int64_t T) {
  check(B >= 1 && T >= 1, "cuda attention: no plan for B = ", B, ", T = ", T);
  PlanLayout L;
  L.B = B;
  L.T = T;
  const int64_t nb = (T + kTile - 1) / kTile;
  L.n_q_items = L.n_k_items = B * nb;
  L.n_entries = B * nb * (nb + 1) / 2;
  place_sections(L);
  return L.bytes;
}

void write_plan(const std::vector<BlockMask>& masks, const PlanLayout& L, void* dst,
                std::vector<WorkItem>& order, ItemOrder item_order) {
  auto* base = static_cast<unsigned char*>(dst);
  std::memset(base, 0, L.bytes);  // padding between sections: the buffer is a function of the masks
  auto* q_list = reinterpret_cast<int32_t*>(base + L.q_list);
  auto* k_list = reinterpret_cast<int32_t*>(base + L.k_list);
  auto* lo = reinterpret_cast<int32_t*>(base + L.lo);
  const int64_t T = L.T;

  // Lists, with full narrowed to tiles whose query and key tiles are both complete.
  int64_t off = 0;
  for (const BlockMask& m : masks) {
    const int64_t nb = m.num_blocks();
    for (int64_t qb = 0; qb < nb; ++qb)
      for (int32_t e = m.q_ptr[size_t(qb)]; e < m.q_ptr[size_t(qb) + 1]; ++e) {
        const int32_t kb = m.q_kv[size_t(e)];
        const bool full = m.q_full[size_t(e)] && complete(qb, T) && complete(kb, T);
        q_list[off + e] = make_entry(kb, full);
      }
    for (int64_t kb = 0; kb < nb; ++kb)
      for (int32_t e = m.k_ptr[size_t(kb)]; e < m.k_ptr[size_t(kb) + 1]; ++e) {
        const int32_t qb = m.k_q[size_t(e)];
        const bool full = m.k_full[size_t(e)] && complete(qb, T) && complete(kb, T);
        k_list[off + e] = make_entry(qb, full);
      }
    off += int64_t(m.q_kv.size());
  }

  // Items in (sequence, tile) order, then (kLongestFirst) longest list first, ties kept in
  // that order.
  auto emit = [&](size_t section, bool by_query) {
    order.clear();
    int64_t base_e = 0;
    for (size_t b = 0; b < masks.size(); ++b) {
      const BlockMask& m = masks[b];
      const std::vector<int32_t>& ptr = by_query ? m.q_ptr : m.k_ptr;
      for (int64_t t = 0; t < m.num_blocks(); ++t)
        order.push_back(WorkItem{int32_t(b), int32_t(t), int32_t(base_e + ptr[size_t(t)]),
                                 int32_t(base_e + ptr[size_t(t) + 1])});
      base_e += int64_t(m.q_kv.size());
    }
    if (item_order == ItemOrder::kLongestFirst)
      std::sort(order.begin(), order.end(), [](const WorkItem& a, const WorkItem& b) {
        const int32_t la = a.end - a.begin, lb = b.end - b.begin;
        if (la != lb) return la > lb;
        if (a.seq != b.seq) return a.seq < b.seq;
        return a.tile < b.tile;
      });
    std::memcpy(base + section, order.data(), order.size() * sizeof(WorkItem));
  };
  emit(L.q_items, true);
  emit(L.k_items, false);

  // lo[t] = max(first token of t's document, t - window + 1).
  for (size_t b = 0; b < masks.size(); ++b) {
    const BlockMask& m = masks[b];
    int32_t* out = lo + int64_t(b) * T;
    int64_t start = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (t > 0 && m.doc[size_t(t)] != m.doc[size_t(t) - 1]) start = t;
      out[t] = int32_t(std::max(start, t - m.window + 1));
    }
  }
}

PlanView plan_view(const PlanLayout& L, const void* base) {
  const auto* p = static_cast<const unsigned char*>(base);
  PlanView v;
  v.q_items = reinterpret_cast<const WorkItem*>(p + L.q_items);
  v.k_items = reinterpret_cast<const WorkItem*>(p + L.k_items);
  v.q_list = reinterpret_cast<const int32_t*>(p + L.q_list);
  v.k_list = reinterpret_cast<const int32_t*>(p + L.k_list);
  v.lo = reinterpret_cast<const int32_t*>(p + L.lo);
  v.n_q_items = int32_t(L.n_q_items);
  v.n_k_items = int32_t(L.n_k_items);
  v.T = int32_t(L.T);
  return v;
}

int64_t grid_size(int64_t items, int64_t H) { return items * H; }

bool MaskCache::matches(const std::vector<BlockMask>& masks) const {
  if (!valid_ || masks.size() != last_.size()) return false;
  for (size_t b = 0; b < masks.size(); ++b) {
    const BlockMask& a = masks[b];
    const BlockMask& c = last_[b];
    if (a.T != c.T || a.tile != c.tile || a.window != c.window || a.doc != c.doc ||
        a.q_ptr != c.q_ptr || a.q_kv != c.q_kv || a.q_full != c.q_full || a.k_ptr != c.k_ptr ||
        a.k_q != c.k_q || a.k_full != c.k_full)
      return false;
  }
  return true;
}

void MaskCache::remember(const std::vector<BlockMask>& masks) {
  last_.resize(masks.size());
  for (size_t b = 0; b < masks.size(); ++b) last_[b] = masks[b];  // copy-assign keeps capacity
  valid_ = true;
}

}  // namespace speedrun::cuda::attn
