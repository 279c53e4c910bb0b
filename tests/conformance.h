// The harness of the conformance suite (tests/test_conformance.cpp): a case is one body
// written once against a Side, run twice: on the tested backend under its precision, and
// on the CPU backend in fp64 (the oracle) with the same inputs. The body draws its inputs
// through the Side, which rounds them to the dtypes the tested precision gives their class
// (so both runs see the same numbers and only the arithmetic differs), poisons "=" outputs
// with NaN, starts "+=" outputs from random values, and records the outputs to compare.
#pragma once
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <functional>
#include <ostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.h"
#include "core/bf16.h"
#include "tolerances.h"

namespace speedrun::conformance {

using Vec = std::vector<double>;
using Shape = std::vector<int64_t>;

// The operand classes of backend.h: (m) master, (c) compute, (s) statistics, (g) gradient.
enum class Cls { M, C, S, G };

inline DType class_dtype(const Precision& p, Cls c) {
  switch (c) {
    case Cls::M: return p.master;
    case Cls::C: return p.compute;
    case Cls::S: return p.stats();
    case Cls::G: return p.grad;
  }
  return p.compute;
}

inline const char* class_name(Cls c) {
  switch (c) {
    case Cls::M: return "m";
    case Cls::C: return "c";
    case Cls::S: return "s";
    case Cls::G: return "g";
  }
  return "?";
}

// v rounded to nearest even in dtype d, returned as double.
inline double round_to(DType d, double v) {
  switch (d) {
    case DType::F32: return double(float(v));
    case DType::BF16: return double(round_bf16(float(v)));
    default: return v;
  }
}

using tol::rel_err;  // tests/tolerances.h's measure

// A stable 64-bit hash (FNV-1a) of a case's name: its seed, the same in every build.
inline uint64_t seed_of(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// One run of a case: a backend, the precision it runs, and the tensors the body made.
class Side {
 public:
  struct Output {
    std::string what;
    Tensor t;
    double tol;
  };

  // precision: this run's policy (the tested one, or fp64 for the oracle); tested: the
  // tested policy, whose dtypes the inputs are rounded to on both sides.
  Side(Backend& be, Precision precision, Precision tested, bool oracle, uint64_t seed)
      : be(be), precision(precision), tested(tested), oracle(oracle), rng_(seed) {}
  ~Side() {
    be.synchronize();
    for (void* p : allocs_) be.release(p);
  }
  Side(const Side&) = delete;
  Side& operator=(const Side&) = delete;

  Backend& be;
  const Precision precision, tested;
  const bool oracle;

  DType dtype(Cls c) const { return class_dtype(precision, c); }
  DType tested_dtype(Cls c) const { return class_dtype(tested, c); }

  // A zero-filled tensor on this side's backend (no class: an explicit dtype).
  Tensor alloc(DType d, const Shape& shape) {
    Tensor t;
    t.dtype = d;
    t.device = be.device();
    for (int64_t s : shape) t.shape[size_t(t.ndim++)] = s;
    allocs_.push_back(be.allocate(std::max<size_t>(t.bytes(), 1)));
    t.data = allocs_.back();
    if (d == DType::F32 || d == DType::F64 || d == DType::BF16) note(d);
    return t;
  }

  // N(0, scale) values drawn in double (never exactly zero); the same on both sides.
  Vec normal(int64_t n, double scale = 1.0) {
    std::normal_distribution<double> dist(0.0, scale);
    Vec v(static_cast<size_t>(n));
    for (double& x : v) {
      do x = dist(rng_);
      while (x == 0.0);
    }
    return v;
  }
  int64_t uniform_int(int64_t lo, int64_t hi) {  // in [lo, hi]
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  // An input of class c holding `values` rounded to the class's tested dtype.
  Tensor in(Cls c, const Shape& shape, Vec values) {
    for (double& v : values) v = round_to(tested_dtype(c), v);
    Tensor t = alloc(dtype(c), shape);
    be.from_host_f64(t, values);
    return t;
  }
  Tensor randn(Cls c, const Shape& shape, double scale = 1.0) {
    return in(c, shape, normal(numel(shape), scale));
  }
  // An "=" output: every element NaN, so one the op does not write fails the comparison.
  Tensor out(Cls c, const Shape& shape) {
    Tensor t = alloc(dtype(c), shape);
    be.from_host_f64(t, Vec(size_t(numel(shape)), std::numeric_limits<double>::quiet_NaN()));
    return t;
  }
  // A "+=" output: starts from random values, so the accumulation itself is checked.
  Tensor acc(Cls c, const Shape& shape, double scale = 1.0) { return randn(c, shape, scale); }
  // An "=" output that the contract lets alias `target`: the tested side writes into target
  // itself; the oracle writes a separate poisoned tensor, so aliasing is checked against a
  // run without it.
  Tensor out_aliasing(const Tensor& target, Cls c, const Shape& shape) {
    return oracle ? out(c, shape) : target;
  }
  Tensor tokens(const std::vector<int32_t>& ids) {
    Tensor t = alloc(DType::I32, {int64_t(ids.size())});
    be.upload(t, ids.data());
    return t;
  }
  // A 0-dim scalar of class c holding v (rounded to the tested dtype).
  Tensor scalar(Cls c, double v) {
    Tensor t = in(c, {1}, {v});
    t.ndim = 0;
    t.shape = {0, 0, 0, 0};
    return t;
  }

  // Records an output to compare with the oracle's, within `tol` (only the tested side's
  // value is used: tol() below, or a case's own bound).
  void check(const std::string& what, const Tensor& t, double tol) {
    outputs_.push_back({what, t, tol});
  }
  // For ops the contract calls deterministic ("the same bits on every run"): a and b, the
  // outputs of two runs on the same inputs, hold the same values (checked on the tested
  // side; the oracle's run has nothing to prove).
  void expect_same_bits(const Tensor& a, const Tensor& b, const std::string& what) {
    if (oracle) return;
    const Vec x = be.to_host_f64(a), y = be.to_host_f64(b);
    for (size_t i = 0; i < x.size(); ++i)
      if (!(x[i] == y[i]) && !(std::isnan(x[i]) && std::isnan(y[i]))) {
        ADD_FAILURE() << what << ": a second run on the same inputs differs at element " << i
                      << " (" << x[i] << " vs " << y[i] << "): the op is not deterministic";
        return;
      }
  }
  // The default bound: the conformance tolerance of the least precise floating dtype among
  // the tensors this run made (the op's operands), for reductions of `reduction` terms.
  double tol(int64_t reduction = 1) const { return tol::conformance(least_, reduction); }

  const std::vector<Output>& outputs() const { return outputs_; }

  static int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t x : s) n *= x;
    return n;
  }

 private:
  static int precision_rank(DType d) { return d == DType::BF16 ? 0 : d == DType::F32 ? 1 : 2; }
  void note(DType d) {
    if (precision_rank(d) < precision_rank(least_)) least_ = d;
  }

  std::mt19937_64 rng_;
  std::vector<void*> allocs_;
  std::vector<Output> outputs_;
  DType least_ = DType::F64;
};

// ---- naming and inputs ------------------------------------------------------------------

// "op(k=v,k=v)" from alternating keys and values.
template <class... A>
std::string nm(const std::string& op, const A&... kv) {
  std::ostringstream os;
  os << op << "(";
  int i = 0;
  ((os << (i == 0 ? "" : i % 2 == 0 ? "," : "=") << kv, ++i), ...);
  os << ")";
  return os.str();
}

// A GoogleTest name (letters, digits, _) from a readable one: attention_forward(B=2,T=257)
// becomes attention_forward_B2_T257.
inline std::string gtest_name(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      out += c;
    } else if (c == '.') {
      out += 'p';
    } else if (c == '-') {
      out += 'm';
    } else if (c != '=' && !out.empty() && out.back() != '_') {
      out += '_';
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

// Rounds values to class c's tested dtype (what Side::in would store).
inline Vec rounded(const Side& s, Cls c, Vec v) {
  for (double& x : v) x = round_to(s.tested_dtype(c), x);
  return v;
}

// One case of the table: a readable name (ggml style, "op(K=V,...)") and its body.
struct Case {
  std::string name;
  std::function<void(Side&)> body;
};
inline void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

}  // namespace speedrun::conformance
