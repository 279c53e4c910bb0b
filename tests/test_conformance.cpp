// Conformance of every backend to backend.h, in the spirit of ggml's test-backend-ops: each
// op of the Backend interface, called THROUGH the interface on a backend built by name,
// against the CPU backend in fp64 (the oracle) on the same inputs; the tolerance is that of
// the least precise dtype among the op's operands (tests/tolerances.h). Outputs assigned
// ("=") start as NaN, so an element the op does not write fails; accumulated ones ("+=")
// start from random values; aliasing the contract allows is exercised against an oracle
// run without it; ops the contract calls deterministic run twice to the same bits. The
// kernels' own maths (finite differences, naive loops) is proven in test_ops.cpp and
// test_attention.cpp; this suite proves a backend computes the same.
//
// A new backend joins with one line in kTargets below; on a machine without its device
// its cases skip, saying why.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <tuple>

#include "backend/block_mask.h"
#include "backend/factory.h"
#include "bf16_emulation.h"
#include "conformance.h"

namespace speedrun::conformance {
namespace {

// ---- the backends under test ------------------------------------------------------------

struct Target {
  DeviceChoice device;
  PrecisionChoice precision;
  bool bf16_emulation = false;  // tests/bf16_emulation.h instead of the factory's backend
};

const Target kTargets[] = {
    {DeviceChoice::CPU, PrecisionChoice::FP32},
    {DeviceChoice::CUDA, PrecisionChoice::BF16},
};

// The suite's own bf16 paths, on the CPU: they run here even where no GPU is.
const Target kEmulated[] = {{DeviceChoice::CPU, PrecisionChoice::BF16, true}};

std::string label(const Target& t) {
  return enum_name(t.device) + "_" + enum_name(t.precision) + (t.bf16_emulation ? "_emulated" : "");
}
void PrintTo(const Target& t, std::ostream* os) { *os << label(t); }

// Whether the target's device exists here; if not, *why says what is missing.
bool available(const Target& t, std::string* why) {
  if (t.device != DeviceChoice::CUDA) return true;
  if (!cuda_built()) {
    *why = "this build has no CUDA backend (configure with the CUDA toolkit installed)";
    return false;
  }
  std::string reason;
  if (cuda_device_count(&reason) == 0) {
    *why = "no CUDA GPU is visible (" + reason + ")";
    return false;
  }
  return true;
}

// One backend per device per process, built by name like every command builds it.
Backend& backend(const Target& t) {
  if (t.bf16_emulation) {
    static Bf16Emulation emulated;
    return emulated;
  }
  static std::map<DeviceChoice, std::unique_ptr<Backend>> made;
  auto& be = made[t.device];
  if (!be) be = make_backend(BackendOptions{t.device, 0, -1, {}});
  return *be;
}

Backend& oracle() {
  static std::unique_ptr<Backend> be = make_backend(BackendOptions{DeviceChoice::CPU, 0, -1, {}});
  return *be;
}

const Precision kFp64 = named_precision(PrecisionChoice::FP64);

// ---- host helpers -----------------------------------------------------------------------

constexpr int32_t kEot = 50256;
constexpr double kNormEps = 1.1920928955078125e-07;  // the model's (fp32 machine epsilon)

// Tokens of one sequence of T: "one" document, "all" EOTs (every document one token), or
// "mixed": EOTs at the start, in a run (one-token documents), around a tile edge and at
// the end for even b, at random (p = 0.05) for odd b.
std::vector<int32_t> doc_tokens(const std::string& docs, int64_t T, int64_t b, Side& s) {
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (auto& x : t) x = int32_t(s.uniform_int(0, 50000));
  if (docs == "all") {
    std::fill(t.begin(), t.end(), kEot);
  } else if (docs == "mixed") {
    if (b % 2 == 0) {
      for (int64_t p : {int64_t(0), int64_t(5), int64_t(6), int64_t(7), int64_t(127),
                        int64_t(128), int64_t(200), T - 1})
        if (p < T) t[size_t(p)] = kEot;
    } else {
      for (auto& x : t)
        if (s.uniform_int(0, 19) == 0) x = kEot;
    }
  }
  return t;
}

std::vector<BlockMask> masks_for(const std::string& docs, int64_t B, int64_t T, int64_t window,
                                 Side& s) {
  std::vector<BlockMask> m;
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t> t = doc_tokens(docs, T, b, s);
    m.push_back(build_block_mask(t.data(), T, kEot, window));
  }
  return m;
}

// rstd of each row of x [rows, dim] in double.
Vec rstd_of(const Vec& x, int64_t rows, int64_t dim, double eps) {
  Vec r(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += x[size_t(i * dim + j)] * x[size_t(i * dim + j)];
    r[size_t(i)] = 1.0 / std::sqrt(ss / double(dim) + eps);
  }
  return r;
}

// Exact rotary tables [T, D/2] of positions start.., in double.
void exact_tables(Vec* cos, Vec* sin, int64_t T, int64_t D, double base, int64_t start = 0) {
  const int64_t half = D / 2;
  cos->assign(size_t(T * half), 0);
  sin->assign(size_t(T * half), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < half; ++j) {
      const double a = double(start + t) * std::pow(base, -2.0 * double(j) / double(D));
      (*cos)[size_t(t * half + j)] = std::cos(a);
      (*sin)[size_t(t * half + j)] = std::sin(a);
    }
}

// ---- memory: upload/download, fill, copy, convert, sum_into ------------------------------

// Host bytes of `v` in dtype d (F32, F64, BF16 bits, I32).
std::vector<uint8_t> host_bytes(DType d, const Vec& v) {
  std::vector<uint8_t> b(v.size() * dtype_size(d));
  for (size_t i = 0; i < v.size(); ++i) {
    uint8_t* p = b.data() + i * dtype_size(d);
    if (d == DType::F32) {
      const float f = float(v[i]);
      std::memcpy(p, &f, 4);
    } else if (d == DType::F64) {
      std::memcpy(p, &v[i], 8);
    } else if (d == DType::BF16) {
      const uint16_t h = bf16_bits(float(v[i]));
      std::memcpy(p, &h, 2);
    } else {
      const int32_t x = int32_t(std::lround(v[i] * 1000));
      std::memcpy(p, &x, 4);
    }
  }
  return b;
}

// The value of one element in host bytes of dtype d (F32, F64, BF16).
double host_value(DType d, const uint8_t* p) {
  if (d == DType::F64) {
    double x;
    std::memcpy(&x, p, 8);
    return x;
  }
  if (d == DType::BF16) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return bf16_to_float(h);
  }
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

void memory_cases(std::vector<Case>& cases) {
  // upload then download gives the bytes back, for each class's dtype, F64 and I32.
  struct Kind {
    std::string key, name;  // class=m, or dtype=F64
    std::function<DType(const Side&)> dtype;
  };
  std::vector<Kind> kinds;
  for (Cls c : {Cls::M, Cls::C, Cls::S, Cls::G})
    kinds.push_back({"class", class_name(c), [c](const Side& s) { return s.dtype(c); }});
  kinds.push_back({"dtype", "F64", [](const Side&) { return DType::F64; }});
  kinds.push_back({"dtype", "I32", [](const Side&) { return DType::I32; }});
  for (const Kind& k : kinds) {
    constexpr int64_t n = 1025;  // a constant: the lambdas use it without capturing it
    cases.push_back({nm("upload_download", k.key, k.name, "n", n), [k](Side& s) {
                       if (s.oracle) return;
                       const DType d = k.dtype(s);
                       const std::vector<uint8_t> host = host_bytes(d, s.normal(n, 100));
                       Tensor t = s.alloc(d, {n});
                       s.be.upload(t, host.data());
                       std::vector<uint8_t> back(host.size(), 0xAB);
                       s.be.download(back.data(), t);
                       EXPECT_TRUE(back == host) << dtype_name(d) << ": the bytes differ";
                     }});
  }

  // fill writes every element, with the value rounded to the tensor's dtype.
  for (Cls c : {Cls::M, Cls::C, Cls::S, Cls::G})
    for (double v : {0.0, -2.5, 0.1}) {
      constexpr int64_t n = 1025;
      cases.push_back({nm("fill", "class", class_name(c), "value", v, "n", n), [c, v](Side& s) {
                         if (s.oracle) return;
                         Tensor t = s.out(c, {n});
                         s.be.fill(t, v);
                         const Vec got = s.be.to_host_f64(t);
                         const double want = round_to(s.dtype(c), v);
                         for (int64_t i = 0; i < n; ++i)
                           ASSERT_EQ(got[size_t(i)], want) << "element " << i;
                       }});
    }
  cases.push_back({nm("fill", "dtype", "F64", "value", 0, "n", 1), [](Side& s) {
                     if (s.oracle) return;
                     Tensor t = s.alloc(DType::F64, {1}).view({});
                     s.be.from_host_f64(t, {12.5});
                     s.be.fill(t, 0.0);
                     EXPECT_EQ(s.be.to_host_f64(t)[0], 0.0);
                   }});

  for (Cls c : {Cls::M, Cls::C, Cls::S, Cls::G}) {
    constexpr int64_t n = 1025 * 3;
    cases.push_back({nm("copy", "class", class_name(c), "n", n), [c](Side& s) {
                       Tensor src = s.randn(c, {3, 1025});
                       Tensor dst = s.out(c, {3, 1025});
                       s.be.copy(dst, src);
                       s.check("dst", dst, 0.0);
                     }});
  }

  // convert: every pair of F32, F64, BF16, bit for bit against round-to-nearest-even on the
  // host: random values over 12 decades, exact ties (to even, both ways), signed zeros,
  // infinities, NaN, overflow and subnormals.
  const DType floats[] = {DType::F32, DType::F64, DType::BF16};
  for (DType from : floats)
    for (DType to : floats) {
      cases.push_back({nm("convert", "from", dtype_name(from), "to", dtype_name(to)),
                       [from, to](Side& s) {
        if (s.oracle) return;
        Vec v = {0.0, -0.0, 1.0, -1.0, INFINITY, -INFINITY, NAN,
                 1 + 0x1p-8, 1 + 3 * 0x1p-8, -(1 + 0x1p-8), 0x1p100 * (1 + 0x1p-8),  // bf16 ties
                 1 + 0x1p-24, 1 + 3 * 0x1p-24, -(1 + 0x1p-24),                         // f32 ties
                 3.3e38, 3.4e38, 1e39, -1e39, 1e-40, -1e-40, 0x1p-133, 0x1p-134, 1e-300};
        std::uniform_real_distribution<double> decade(-6, 6);
        std::mt19937_64 rng(seed_of("convert"));
        for (double x : s.normal(1000)) v.push_back(x * std::pow(10.0, decade(rng)));
        // Values whose F32 rounding is a bf16 tie without being that F32 value are left out:
        // F64 -> BF16 through F32 (as PyTorch rounds) and directly differ there, and
        // backend.h does not say which it means.
        std::erase_if(v, [](double y) {
          uint32_t u;
          const float f = float(y);
          std::memcpy(&u, &f, 4);
          return (u & 0xFFFFu) == 0x8000u && double(f) != y;
        });
        for (double& x : v) x = round_to(from, x);  // the source holds `from` values
        const int64_t n = int64_t(v.size());
        Tensor src = s.alloc(from, {n});
        s.be.upload(src, host_bytes(from, v).data());
        Tensor dst = s.alloc(to, {n});
        s.be.upload(dst, host_bytes(to, Vec(size_t(n), NAN)).data());
        s.be.convert(dst, src);
        std::vector<uint8_t> got(size_t(n) * dtype_size(to));
        s.be.download(got.data(), dst);
        const std::vector<uint8_t> want = host_bytes(to, v);
        const size_t w = dtype_size(to);
        for (int64_t i = 0; i < n; ++i) {
          const uint8_t* g = got.data() + size_t(i) * w;
          if (std::isnan(v[size_t(i)])) {
            EXPECT_TRUE(std::isnan(host_value(to, g))) << "element " << i << ": NaN lost";
          } else {
            EXPECT_EQ(std::memcmp(g, want.data() + size_t(i) * w, w), 0)
                << "element " << i << ": " << v[size_t(i)] << " not rounded to nearest even";
          }
        }
      }});
    }

  // sum_into accumulates into an F64 scalar, in double: the oracle's bound for the
  // summation order of n terms, whatever the tensor's dtype.
  for (const auto& class_n : {std::pair{Cls::S, int64_t(1)}, std::pair{Cls::S, int64_t(1025)},
                              std::pair{Cls::C, int64_t(100003)}}) {
    const Cls c = class_n.first;  // named variables: clang < 16 cannot capture bindings
    const int64_t n = class_n.second;
    cases.push_back({nm("sum_into", "class", class_name(c), "n", n), [c, n](Side& s) {
                       Tensor acc = s.alloc(DType::F64, {1}).view({});
                       s.be.from_host_f64(acc, s.normal(1, 10));
                       s.be.sum_into(acc, s.randn(c, {n}));
                       s.check("acc", acc, tol::conformance(DType::F64, n));
                     }});
  }
}

// ---- linear algebra, embedding, norms, rotary --------------------------------------------

void matmul_cases(std::vector<Case>& cases) {
  struct MNK {
    int64_t M, N, K;
  };
  for (MNK d : {MNK{1, 32, 33}, MNK{31, 33, 1025}, MNK{65, 31, 129}, MNK{3, 16, 0}})
    for (int tA : {0, 1})
      for (int tB : {0, 1})
        for (int acc : {0, 1})
          for (Cls c : {Cls::C, Cls::G}) {
            cases.push_back({nm("matmul", "M", d.M, "N", d.N, "K", d.K, "tA", tA, "tB", tB,
                                "acc", acc, "C", class_name(c)),
                             [=](Side& s) {
                               Tensor A = s.randn(Cls::C, tA ? Shape{d.K, d.M} : Shape{d.M, d.K});
                               Tensor B = s.randn(Cls::C, tB ? Shape{d.N, d.K} : Shape{d.K, d.N});
                               Tensor C = acc ? s.acc(c, {d.M, d.N}, 10) : s.out(c, {d.M, d.N});
                               s.be.matmul(C, A, tA, B, tB, acc);
                               s.check("C", C, s.tol(std::max<int64_t>(d.K, 1)));
                             }});
          }
}

// matmul_add: C = op(A) op(B) + R, the residual R read and left unchanged; R apart from C,
// and R being C itself (then it is matmul's +=).
void matmul_add_cases(std::vector<Case>& cases) {
  struct MNK {
    int64_t M, N, K;
  };
  for (MNK d : {MNK{31, 33, 1025}, MNK{65, 31, 129}, MNK{3, 16, 0}})
    for (int tA : {0, 1})
      for (int tB : {0, 1})
        for (int alias : {0, 1}) {
          cases.push_back({nm("matmul_add", "M", d.M, "N", d.N, "K", d.K, "tA", tA, "tB", tB,
                              "R", alias ? "C" : "apart"),
                           [=](Side& s) {
                             Tensor A = s.randn(Cls::C, tA ? Shape{d.K, d.M} : Shape{d.M, d.K});
                             Tensor B = s.randn(Cls::C, tB ? Shape{d.N, d.K} : Shape{d.K, d.N});
                             Tensor R = s.randn(Cls::C, {d.M, d.N}, 10);
                             Tensor C = alias ? R : s.out(Cls::C, {d.M, d.N});
                             s.be.matmul_add(C, A, tA, B, tB, R);
                             s.check("C", C, s.tol(std::max<int64_t>(d.K, 1)));
                             if (!alias) s.check("R", R, 0.0);
                           }});
        }
}

void embedding_cases(std::vector<Case>& cases) {
  struct NVC {
    int64_t N, V, C;
  };
  for (NVC d : {NVC{1025, 37, 33}, NVC{64, 1031, 128}}) {
    // Tokens repeat (N > V, or drawn from a few ids), and include the first and last id.
    auto ids = [d](Side& s) {
      std::vector<int32_t> t(static_cast<size_t>(d.N));
      for (auto& x : t) x = int32_t(s.uniform_int(0, std::min<int64_t>(d.V, 40) - 1));
      t[0] = 0;
      t[size_t(d.N - 1)] = int32_t(d.V - 1);
      t[1] = int32_t(d.V - 1);
      return t;
    };
    cases.push_back({nm("embedding_forward", "N", d.N, "V", d.V, "C", d.C), [=](Side& s) {
                       Tensor tok = s.tokens(ids(s));
                       Tensor wte = s.randn(Cls::C, {d.V, d.C});
                       Tensor out = s.out(Cls::C, {d.N, d.C});
                       s.be.embedding_forward(out, tok, wte);
                       s.check("out", out, 0.0);
                     }});
    cases.push_back({nm("embedding_backward", "N", d.N, "V", d.V, "C", d.C), [=](Side& s) {
                       Tensor tok = s.tokens(ids(s));
                       Tensor dout = s.randn(Cls::C, {d.N, d.C});
                       Tensor dwte = s.acc(Cls::G, {d.V, d.C});
                       Tensor again = s.alloc(dwte.dtype, {d.V, d.C});
                       s.be.copy(again, dwte);
                       s.be.embedding_backward(dwte, tok, dout);
                       s.check("dwte", dwte, s.tol(d.N));
                       s.be.embedding_backward(again, tok, dout);
                       s.expect_same_bits(again, dwte, "dwte");
                     }});
  }
}

void norm_cases(std::vector<Case>& cases) {
  struct RC {
    int64_t R, C;
    int alias;
  };
  for (RC d : {RC{1, 31, 0}, RC{1025, 33, 1}, RC{7, 768, 0}, RC{1025, 32, 1}}) {
    cases.push_back({nm("rms_norm_forward", "R", d.R, "C", d.C, "y", d.alias ? "x" : "new"),
                     [=](Side& s) {
                       Tensor x = s.randn(Cls::C, {d.R, d.C}, 3.0);
                       Tensor y = d.alias ? s.out_aliasing(x, Cls::C, {d.R, d.C})
                                          : s.out(Cls::C, {d.R, d.C});
                       Tensor rstd = s.out(Cls::S, {d.R});
                       s.be.rms_norm_forward(y, rstd, x, kNormEps);
                       s.check("y", y, s.tol(d.C));
                       s.check("rstd", rstd, s.tol(d.C));
                     }});
  }
  for (RC d : {RC{1025, 33, 0}, RC{7, 768, 0}})
    for (int acc : {0, 1})
      cases.push_back({nm("rms_norm_backward", "R", d.R, "C", d.C, "acc", acc), [=](Side& s) {
                         const Vec xv = rounded(s, Cls::C, s.normal(d.R * d.C, 3.0));
                         Tensor x = s.in(Cls::C, {d.R, d.C}, xv);
                         Tensor rstd = s.in(Cls::S, {d.R}, rstd_of(xv, d.R, d.C, kNormEps));
                         Tensor dy = s.randn(Cls::C, {d.R, d.C});
                         Tensor dx = acc ? s.acc(Cls::C, {d.R, d.C}) : s.out(Cls::C, {d.R, d.C});
                         s.be.rms_norm_backward(dx, dy, x, rstd, acc);
                         s.check("dx", dx, s.tol(d.C));
                       }});
  // A block's input mix and its norm, fused: the lambdas' coefficients read from (m)
  // scalars with (g) gradients; dx over dres (the model's call) or a new tensor.
  auto lambdas = [](Side& s, Tensor* ga, Tensor* gb) {
    *ga = s.scalar(Cls::G, s.normal(1)[0]);
    *gb = s.scalar(Cls::G, s.normal(1)[0]);
    return std::make_pair(Coef::param(s.scalar(Cls::M, 0.9 + 0.1 * s.normal(1)[0]), *ga),
                          Coef::param(s.scalar(Cls::M, 0.2 + 0.1 * s.normal(1)[0]), *gb));
  };
  for (RC d : {RC{1, 31, 0}, RC{1025, 33, 0}, RC{7, 768, 0}, RC{1025, 32, 1}}) {
    cases.push_back({nm("mix_norm_forward", "R", d.R, "C", d.C), [=](Side& s) {
                       Tensor ga, gb;
                       const auto [a, b] = lambdas(s, &ga, &gb);
                       Tensor x = s.randn(Cls::C, {d.R, d.C}, 3.0), y = s.randn(Cls::C, {d.R, d.C});
                       Tensor xmix = s.out(Cls::C, {d.R, d.C}), n = s.out(Cls::C, {d.R, d.C});
                       Tensor rstd = s.out(Cls::S, {d.R});
                       s.be.mix_norm_forward(xmix, n, rstd, x, a, y, b, kNormEps);
                       s.check("xmix", xmix, s.tol());
                       s.check("n", n, s.tol(d.C));
                       s.check("rstd", rstd, s.tol(d.C));
                     }});
    // With dadd (the 1025-row shapes: one read 8 at a time, one not): an encoder output's
    // skip share added where dx is written. x_is_y (C = 768): the first block's, no dx,
    // its share added into dy.
    const bool add = d.R == 1025, x_is_y = d.C == 768;
    cases.push_back({nm("mix_norm_backward", "R", d.R, "C", d.C, "dx",
                        x_is_y ? "none" : d.alias ? "dres" : "new", "dadd", add),
                     [=](Side& s) {
                       Tensor ga, gb;
                       const auto [a, b] = lambdas(s, &ga, &gb);
                       // xmix and rstd as a forward would leave them.
                       const Vec mv = rounded(s, Cls::C, s.normal(d.R * d.C, 3.0));
                       Tensor xmix = s.in(Cls::C, {d.R, d.C}, mv);
                       Tensor rstd = s.in(Cls::S, {d.R}, rstd_of(mv, d.R, d.C, kNormEps));
                       // x and y hold dres's values (y scaled by -0.7), so that the lambdas'
                       // gradients <g, x> and <g, y> are sums of terms of one sign, O(R C),
                       // rather than ones that cancel to O(1) and leave bf16's rounding of g
                       // as large as the bound (as the skip case below).
                       const Vec rv = s.normal(d.R * d.C);
                       Vec yv = rv;
                       for (double& v : yv) v *= -0.7;
                       Tensor y = s.in(Cls::C, {d.R, d.C}, yv);
                       Tensor x = x_is_y ? y : s.in(Cls::C, {d.R, d.C}, rv);
                       Tensor dn = s.randn(Cls::C, {d.R, d.C}), dres = s.in(Cls::C, {d.R, d.C}, rv);
                       Tensor dx = x_is_y    ? Tensor{}
                                   : d.alias ? s.out_aliasing(dres, Cls::C, {d.R, d.C})
                                             : s.out(Cls::C, {d.R, d.C});
                       Tensor dy = s.acc(Cls::C, {d.R, d.C});
                       Tensor dadd = add ? s.randn(Cls::C, {d.R, d.C}) : Tensor{};
                       s.be.mix_norm_backward(dx, dy, dres, dn, xmix, rstd, x, a, y, b, dadd);
                       if (!x_is_y) s.check("dx", dx, s.tol(d.C));
                       s.check("dy", dy, s.tol(d.C));
                       s.check("a.grad", ga, s.tol(d.R * d.C));
                       s.check("b.grad", gb, s.tol(d.R * d.C));
                     }});
    // A U-net decoder block's input: the skip xin = h + c*skip folded in, c a (m) scalar
    // with a (g) gradient, as skip_weights[i].
    cases.push_back({nm("skip_mix_norm_forward", "R", d.R, "C", d.C), [=](Side& s) {
                       Tensor ga, gb;
                       const auto [a, b] = lambdas(s, &ga, &gb);
                       Tensor gc = s.scalar(Cls::G, s.normal(1)[0]);
                       const Coef c = Coef::param(s.scalar(Cls::M, 0.7 + 0.1 * s.normal(1)[0]), gc);
                       Tensor h = s.randn(Cls::C, {d.R, d.C}, 3.0), skip = s.randn(Cls::C, {d.R, d.C});
                       Tensor y = s.randn(Cls::C, {d.R, d.C});
                       Tensor xmix = s.out(Cls::C, {d.R, d.C}), n = s.out(Cls::C, {d.R, d.C});
                       Tensor rstd = s.out(Cls::S, {d.R});
                       s.be.skip_mix_norm_forward(xmix, n, rstd, h, skip, c, a, y, b, kNormEps);
                       s.check("xmix", xmix, s.tol(2));
                       s.check("n", n, s.tol(d.C));
                       s.check("rstd", rstd, s.tol(d.C));
                     }});
    // skip_is_h (the 1025-row shapes): the first decoder block's, whose skip is its own h:
    // no dskip, its share added to dx.
    const bool skip_is_h = d.R == 1025;
    cases.push_back({nm("skip_mix_norm_backward", "R", d.R, "C", d.C, "dx", d.alias ? "dres" : "new",
                        "skip_is_h", skip_is_h),
                     [=](Side& s) {
                       Tensor ga, gb;
                       const auto [a, b] = lambdas(s, &ga, &gb);
                       Tensor gc = s.scalar(Cls::G, s.normal(1)[0]);
                       const Coef c = Coef::param(s.scalar(Cls::M, 0.7 + 0.1 * s.normal(1)[0]), gc);
                       const Vec mv = rounded(s, Cls::C, s.normal(d.R * d.C, 3.0));
                       Tensor xmix = s.in(Cls::C, {d.R, d.C}, mv);
                       Tensor rstd = s.in(Cls::S, {d.R}, rstd_of(mv, d.R, d.C, kNormEps));
                       // skip holds dres's values, so that c's gradient <d xin, skip> is a
                       // sum of mostly positive terms, O(R C), rather than one that cancels
                       // to O(1) and hides a wrong or missing dot in its rounding.
                       const Vec rv = s.normal(d.R * d.C);
                       Tensor skip = s.in(Cls::C, {d.R, d.C}, rv);
                       Tensor h = skip_is_h ? skip : s.randn(Cls::C, {d.R, d.C});
                       Tensor y = s.randn(Cls::C, {d.R, d.C});
                       Tensor dn = s.randn(Cls::C, {d.R, d.C}), dres = s.in(Cls::C, {d.R, d.C}, rv);
                       Tensor dx = d.alias ? s.out_aliasing(dres, Cls::C, {d.R, d.C})
                                           : s.out(Cls::C, {d.R, d.C});
                       Tensor dy = s.acc(Cls::C, {d.R, d.C});
                       Tensor dskip = skip_is_h ? Tensor{} : s.out(Cls::C, {d.R, d.C});
                       s.be.skip_mix_norm_backward(dx, dskip, dy, dres, dn, xmix, rstd, h, skip, c,
                                                   a, y, b);
                       s.check("dx", dx, s.tol(d.C));
                       if (!skip_is_h) s.check("dskip", dskip, s.tol(d.C));
                       s.check("dy", dy, s.tol(d.C));
                       s.check("a.grad", ga, s.tol(d.R * d.C));
                       s.check("b.grad", gb, s.tol(d.R * d.C));
                       s.check("c.grad", gc, s.tol(d.R * d.C));
                     }});
  }
}

void rotary_cases(std::vector<Case>& cases) {
  struct BTHD {
    int64_t B, T, H, D;
  };
  for (BTHD d : {BTHD{2, 257, 2, 64}, BTHD{1, 129, 3, 128}, BTHD{3, 1, 2, 64}}) {
    const int64_t N = d.B * d.T, C = d.H * d.D;
    // Tables: exact, rounded to (s); the decoder's T = 1 rows sit at position 1000.
    auto tables = [d](Side& s, Tensor* cos, Tensor* sin) {
      Vec c, sn;
      exact_tables(&c, &sn, d.T, d.D, 10000.0, d.T == 1 ? 1000 : 0);
      *cos = s.in(Cls::S, {d.T, d.D / 2}, c);
      *sin = s.in(Cls::S, {d.T, d.D / 2}, sn);
    };
    // The stacked projection's ops: in layer 0 v1 is qkv's own v_raw (and dv1 takes both
    // terms, then is v_raw's gradient); in later layers it is another tensor's. lamb's
    // (1 - lamb) and lamb share one gradient scalar, as in the model.
    for (int layer : {0, 1}) {
      auto lamb = [](Side& s, Tensor* grad) {
        Tensor v = s.scalar(Cls::M, 0.3 + 0.1 * s.normal(1)[0]);
        *grad = s.scalar(Cls::G, s.normal(1)[0]);
        return std::make_pair(Coef::one_minus(v, *grad), Coef::param(v, *grad));
      };
      cases.push_back({nm("qkv_forward", "B", d.B, "T", d.T, "H", d.H, "D", d.D, "layer", layer),
                       [=](Side& s) {
                         Tensor cos, sin, g;
                         tables(s, &cos, &sin);
                         const auto [a, b] = lamb(s, &g);
                         Tensor qkv = s.randn(Cls::C, {N, 3 * C}, 3.0);
                         Tensor v1src = layer == 0 ? qkv : s.randn(Cls::C, {N, 3 * C});
                         Tensor q = s.out(Cls::C, {N, C}), k = s.out(Cls::C, {N, C});
                         Tensor v = s.out(Cls::C, {N, C}), rstd = s.out(Cls::S, {2, N * d.H});
                         s.be.qkv_forward(q, k, v, rstd, qkv, v1src, a, b, cos, sin, d.T, d.H,
                                          kNormEps);
                         s.check("q", q, s.tol(d.D));
                         s.check("k", k, s.tol(d.D));
                         s.check("v", v, s.tol());
                         s.check("rstd", rstd, s.tol(d.D));
                       }});
      cases.push_back({nm("qkv_backward", "B", d.B, "T", d.T, "H", d.H, "D", d.D, "layer", layer),
                       [=](Side& s) {
                         Tensor cos, sin, g;
                         tables(s, &cos, &sin);
                         const auto [a, b] = lamb(s, &g);
                         const Vec xv = rounded(s, Cls::C, s.normal(N * 3 * C, 3.0));
                         Vec qk_raw;  // q_raw's heads, then k_raw's, row by row
                         for (int64_t part = 0; part < 2; ++part)
                           for (int64_t n = 0; n < N; ++n)
                             qk_raw.insert(qk_raw.end(), xv.begin() + n * 3 * C + part * C,
                                           xv.begin() + n * 3 * C + part * C + C);
                         Tensor qkv = s.in(Cls::C, {N, 3 * C}, xv);
                         Tensor rstd = s.in(Cls::S, {2, N * d.H},
                                            rstd_of(qk_raw, 2 * N * d.H, d.D, kNormEps));
                         Tensor v1src = layer == 0 ? qkv : s.randn(Cls::C, {N, 3 * C});
                         Tensor dq = s.randn(Cls::C, {N, C}), dk = s.randn(Cls::C, {N, C});
                         Tensor dv = s.randn(Cls::C, {N, C}), dv1 = s.acc(Cls::C, {N, C});
                         Tensor dqkv = s.out(Cls::C, {N, 3 * C});
                         s.be.qkv_backward(dqkv, dv1, dq, dk, dv, qkv, rstd, v1src, a, b, cos, sin,
                                           d.T, d.H);
                         s.check("dqkv", dqkv, s.tol(d.D));
                         s.check("dv1", dv1, s.tol());
                         s.check("lamb.grad", g, s.tol(N * C));
                       }});
    }
  }

  struct TDB {
    int64_t T, D;
    double base;
  };
  for (TDB d : {TDB{1025, 64, 10000}, TDB{257, 128, 1024}})
    cases.push_back({nm("rotary_tables", "T", d.T, "D", d.D, "base", d.base), [=](Side& s) {
                       Tensor cos = s.out(Cls::S, {d.T, d.D / 2});
                       Tensor sin = s.out(Cls::S, {d.T, d.D / 2});
                       s.be.rotary_tables(cos, sin, d.base);
                       const double t = tol::rotary_tables(s.dtype(Cls::S), double(d.T - 1));
                       s.check("cos", cos, t);
                       s.check("sin", sin, t);
                     }});
  struct RSD {
    int64_t R, start, D;
  };
  for (RSD d : {RSD{33, 1000, 64}, RSD{1, 4095, 128}, RSD{130, 0, 64}})
    cases.push_back({nm("rotary_tables_at", "R", d.R, "start", d.start, "D", d.D), [=](Side& s) {
      Tensor cos = s.out(Cls::S, {d.R, d.D / 2}), sin = s.out(Cls::S, {d.R, d.D / 2});
      s.be.rotary_tables_at(cos, sin, 10000.0, d.start);
      const double t = tol::rotary_tables(s.dtype(Cls::S), double(d.start + d.R - 1));
      s.check("cos", cos, t);
      s.check("sin", sin, t);
      if (s.oracle) return;
      // The contract: the same bits as rows start.. of rotary_tables on a longer table.
      const int64_t L = d.start + d.R, half = d.D / 2;
      Tensor lc = s.out(Cls::S, {L, half}), ls = s.out(Cls::S, {L, half});
      s.be.rotary_tables(lc, ls, 10000.0);
      const Vec c = s.be.to_host_f64(cos), sn = s.be.to_host_f64(sin);
      const Vec fc = s.be.to_host_f64(lc), fs = s.be.to_host_f64(ls);
      for (int64_t i = 0; i < d.R * half; ++i) {
        ASSERT_EQ(c[size_t(i)], fc[size_t(d.start * half + i)]) << "cos element " << i;
        ASSERT_EQ(sn[size_t(i)], fs[size_t(d.start * half + i)]) << "sin element " << i;
      }
    }});
}

// ---- attention ----------------------------------------------------------------------------

struct AttnShape {
  int64_t B, T, H, D, window;
  std::string docs;
};

std::string attn_name(const std::string& op, const AttnShape& a) {
  return nm(op, "B", a.B, "T", a.T, "H", a.H, "D", a.D, "win", a.window, "docs", a.docs);
}

void attention_cases(std::vector<Case>& cases) {
  // T not a multiple of the 128 tile, one tile exactly, one token per document, a window
  // inside a tile, just over one, larger than T, and of one token; head dims 64 and 128.
  const AttnShape fwd[] = {
      {2, 257, 2, 64, 100, "mixed"}, {2, 257, 2, 128, 1000, "mixed"}, {2, 128, 1, 64, 64, "one"},
      {3, 300, 2, 64, 129, "one"},   {2, 33, 2, 128, 1, "one"},       {2, 257, 1, 64, 300, "all"},
  };
  const AttnShape bwd[] = {
      {2, 257, 2, 64, 100, "mixed"}, {2, 257, 2, 128, 1000, "mixed"}, {3, 300, 2, 64, 129, "one"},
      {2, 257, 1, 64, 300, "all"},
  };
  for (const AttnShape& a : fwd)
    cases.push_back({attn_name("attention_forward", a), [a](Side& s) {
                       const int64_t N = a.B * a.T, C = a.H * a.D;
                       const auto masks = masks_for(a.docs, a.B, a.T, a.window, s);
                       Tensor q = s.randn(Cls::C, {N, C}, 2.0), k = s.randn(Cls::C, {N, C});
                       Tensor v = s.randn(Cls::C, {N, C});
                       Tensor out = s.out(Cls::C, {N, C}), lse = s.out(Cls::S, {a.B, a.H, a.T});
                       s.be.attention_forward(out, lse, q, k, v, masks, a.H,
                                              1.0 / std::sqrt(double(a.D)));
                       s.check("out", out, s.tol(std::max(a.D, std::min(a.T, a.window))));
                       s.check("lse", lse, s.tol(std::max(a.D, std::min(a.T, a.window))));
                     }});
  for (const AttnShape& a : bwd)
    cases.push_back({attn_name("attention_backward", a), [a](Side& s) {
      const int64_t N = a.B * a.T, C = a.H * a.D;
      const double scale = 1.0 / std::sqrt(double(a.D));
      const auto masks = masks_for(a.docs, a.B, a.T, a.window, s);
      const Vec qv = rounded(s, Cls::C, s.normal(N * C, 2.0));
      const Vec kv = rounded(s, Cls::C, s.normal(N * C)), vv = rounded(s, Cls::C, s.normal(N * C));
      // The forward's out and lse from the oracle on these exact inputs, rounded like the
      // tested backend would store them: both runs get the same consistent inputs.
      Vec outv, lsev;
      {
        Side f(oracle(), kFp64, kFp64, true, 0);
        Tensor o = f.out(Cls::C, {N, C}), l = f.out(Cls::S, {a.B, a.H, a.T});
        f.be.attention_forward(o, l, f.in(Cls::C, {N, C}, qv), f.in(Cls::C, {N, C}, kv),
                               f.in(Cls::C, {N, C}, vv), masks, a.H, scale);
        outv = f.be.to_host_f64(o);
        lsev = f.be.to_host_f64(l);
      }
      Tensor q = s.in(Cls::C, {N, C}, qv), k = s.in(Cls::C, {N, C}, kv);
      Tensor v = s.in(Cls::C, {N, C}, vv);
      Tensor out = s.in(Cls::C, {N, C}, outv), lse = s.in(Cls::S, {a.B, a.H, a.T}, lsev);
      Tensor dout = s.randn(Cls::C, {N, C});
      Tensor dq = s.out(Cls::C, {N, C}), dk = s.out(Cls::C, {N, C}), dv = s.out(Cls::C, {N, C});
      s.be.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, masks, a.H, scale);
      const double t = s.tol(std::max(a.D, std::min(a.T, a.window)));
      s.check("dq", dq, t);
      s.check("dk", dk, t);
      s.check("dv", dv, t);
      if (s.oracle) return;
      Tensor dq2 = s.out(Cls::C, {N, C}), dk2 = s.out(Cls::C, {N, C}), dv2 = s.out(Cls::C, {N, C});
      s.be.attention_backward(dq2, dk2, dv2, dout, q, k, v, out, lse, masks, a.H, scale);
      s.expect_same_bits(dq2, dq, "dq");
      s.expect_same_bits(dk2, dk, "dk");
      s.expect_same_bits(dv2, dv, "dv");
    }});

  struct Decode {
    int64_t S, H, D;
    std::string rows;
  };
  for (const Decode& d : {Decode{257, 2, 64, "random"}, Decode{300, 1, 128, "window"},
                          Decode{1, 2, 64, "first"}})
    cases.push_back({nm("attention_decode", "S", d.S, "H", d.H, "D", d.D, "rows", d.rows),
                     [d](Side& s) {
                       const int64_t C = d.H * d.D;
                       std::vector<int32_t> rows;
                       if (d.rows == "random") {  // 100 distinct rows in random order
                         std::vector<int32_t> all(static_cast<size_t>(d.S));
                         for (int64_t i = 0; i < d.S; ++i) all[size_t(i)] = int32_t(i);
                         for (int64_t i = d.S - 1; i > 0; --i)
                           std::swap(all[size_t(i)], all[size_t(s.uniform_int(0, i))]);
                         rows.assign(all.begin(), all.begin() + 100);
                       } else if (d.rows == "window") {  // the last 150, ascending
                         for (int64_t i = d.S - 150; i < d.S; ++i) rows.push_back(int32_t(i));
                       } else {
                         rows = {0};
                       }
                       Tensor q = s.randn(Cls::C, {1, C}, 2.0);
                       Tensor k = s.randn(Cls::C, {d.S, C}), v = s.randn(Cls::C, {d.S, C});
                       Tensor out = s.out(Cls::C, {1, C});
                       s.be.attention_decode(out, q, k, v, rows, d.H, 1.0 / std::sqrt(double(d.D)));
                       s.check("out", out, s.tol(std::max<int64_t>(d.D, int64_t(rows.size()))));
                     }});
}

// ---- elementwise: relu_squared, scaled_sum ------------------------------------------------

enum class CoefKind { Constant, Param, OneMinus };
const char* coef_name(CoefKind k) {
  return k == CoefKind::Constant ? "constant" : k == CoefKind::Param ? "param" : "one_minus";
}

// A Coef of kind k: a constant 0.7, or read from a (m) scalar with its (g) gradient scalar
// (starting random: it accumulates); *grad is that scalar (empty for a constant).
Coef make_coef(Side& s, CoefKind k, Tensor* grad) {
  *grad = Tensor();
  if (k == CoefKind::Constant) return Coef::constant(0.7);
  Tensor v = s.scalar(Cls::M, 0.37 + 0.1 * s.normal(1)[0]);
  *grad = s.scalar(Cls::G, s.normal(1)[0]);
  return k == CoefKind::Param ? Coef::param(v, *grad) : Coef::one_minus(v, *grad);
}

void elementwise_cases(std::vector<Case>& cases) {
  for (Shape sh : {Shape{1, 31}, Shape{1025, 33}}) {
    const int64_t n = Side::numel(sh);
    cases.push_back({nm("relu_squared_forward", "n", n), [sh](Side& s) {
                       Tensor x = s.randn(Cls::C, sh), y = s.out(Cls::C, sh);
                       s.be.relu_squared_forward(y, x);
                       s.check("y", y, s.tol());
                     }});
    for (int alias : {0, 1})
      cases.push_back({nm("relu_squared_backward", "n", n, "dx", alias ? "dy" : "new"),
                       [sh, alias](Side& s) {
                         // From the forward's output, formed in place as the model does.
                         Tensor y = s.randn(Cls::C, sh), dy = s.randn(Cls::C, sh);
                         s.be.relu_squared_forward(y, y);
                         Tensor dx = alias ? s.out_aliasing(dy, Cls::C, sh) : s.out(Cls::C, sh);
                         s.be.relu_squared_backward(dx, dy, y);
                         s.check("dx", dx, s.tol());
                       }});
  }

  struct Fwd {
    Shape sh;
    CoefKind a, b;
    std::string out;  // "new", "x" or "y": which tensor out is
  };
  for (const Fwd& f : {Fwd{{1025, 33}, CoefKind::Constant, CoefKind::Param, "new"},
                       Fwd{{1025, 33}, CoefKind::Param, CoefKind::OneMinus, "x"},
                       Fwd{{1025, 33}, CoefKind::OneMinus, CoefKind::Constant, "y"},
                       Fwd{{1, 31}, CoefKind::Param, CoefKind::Param, "new"}})
    cases.push_back({nm("scaled_sum_forward", "n", Side::numel(f.sh), "a", coef_name(f.a), "b",
                        coef_name(f.b), "out", f.out),
                     [f](Side& s) {
                       Tensor ga, gb;
                       const Coef a = make_coef(s, f.a, &ga), b = make_coef(s, f.b, &gb);
                       Tensor x = s.randn(Cls::C, f.sh), y = s.randn(Cls::C, f.sh);
                       Tensor out = f.out == "x"   ? s.out_aliasing(x, Cls::C, f.sh)
                                    : f.out == "y" ? s.out_aliasing(y, Cls::C, f.sh)
                                                   : s.out(Cls::C, f.sh);
                       s.be.scaled_sum_forward(out, x, a, y, b);
                       s.check("out", out, s.tol());
                     }});

  // The model's two calls (dx assigned over dout; dx and dy one buffer, both accumulated),
  // a skipped dx, and a plain one.
  struct Bwd {
    std::string name;  // dx/dy layout
    CoefKind a, b;
    bool has_dx, acc_x, has_dy, acc_y;
  };
  const Shape sh{1025, 33};
  const int64_t n = Side::numel(sh);
  using K = CoefKind;
  for (const Bwd& w : {Bwd{"dx=dout", K::OneMinus, K::Param, true, false, true, true},
                       Bwd{"dx=dy", K::Param, K::Param, true, true, true, true},
                       Bwd{"dx=none", K::Constant, K::Param, false, false, true, false},
                       Bwd{"new", K::Param, K::Constant, true, false, true, false},
                       Bwd{"dy=none", K::Param, K::OneMinus, true, true, false, false}})
    cases.push_back({nm("scaled_sum_backward", "n", n, "layout", w.name, "acc_x", int(w.acc_x),
                        "acc_y", int(w.acc_y), "a", coef_name(w.a), "b", coef_name(w.b)),
                     [w, sh, n](Side& s) {
      Tensor ga, gb;
      const Coef a = make_coef(s, w.a, &ga), b = make_coef(s, w.b, &gb);
      Tensor x = s.randn(Cls::C, sh), y = s.randn(Cls::C, sh), dout = s.randn(Cls::C, sh);
      auto grad = [&](bool acc) { return acc ? s.acc(Cls::C, sh) : s.out(Cls::C, sh); };
      Tensor dx, dy;
      if (w.name == "dx=dout") {
        dx = s.out_aliasing(dout, Cls::C, sh);
        dy = grad(w.acc_y);
      } else if (w.name == "dx=dy") {  // the same buffer on both runs: += a*dout, += b*dout
        dx = dy = s.acc(Cls::C, sh);
      } else {
        if (w.has_dx) dx = grad(w.acc_x);
        if (w.has_dy) dy = grad(w.acc_y);
      }
      s.be.scaled_sum_backward(dx, w.acc_x, dy, w.acc_y, dout, x, a, y, b);
      if (!dx.empty()) s.check("dx", dx, s.tol());
      if (!dy.empty() && dy.data != dx.data) s.check("dy", dy, s.tol());
      if (!ga.empty()) s.check("a.grad", ga, s.tol(n));
      if (!gb.empty()) s.check("b.grad", gb, s.tol(n));
    }});
}

// ---- head: softcap + cross entropy --------------------------------------------------------

void head_cases(std::vector<Case>& cases) {
  struct CE {
    int64_t R, V;
    double cap, grad_scale;
    int backward;
  };
  for (CE c : {CE{33, 1025, 15, 1, 0}, CE{33, 1025, 15, 1, 1}, CE{5, 50304, 30, 0.25, 1},
               CE{1, 31, 30, 1, 1}})
    cases.push_back({nm("softcap_cross_entropy", "R", c.R, "V", c.V, "cap", c.cap, "grad_scale",
                        c.grad_scale, "backward", c.backward),
                     [c](Side& s) {
                       // Raw logits around the cap, so the softcap bends them.
                       Tensor logits = s.randn(Cls::C, {c.R, c.V}, c.cap);
                       std::vector<int32_t> t(static_cast<size_t>(c.R));
                       for (auto& x : t) x = int32_t(s.uniform_int(0, c.V - 1));
                       t[0] = int32_t(c.V - 1);
                       if (c.R > 1) t[1] = 0;
                       Tensor losses = s.out(Cls::S, {c.R});
                       s.be.softcap_cross_entropy(logits, losses, s.tokens(t), c.cap,
                                                  c.grad_scale, c.backward);
                       // Without backward the logits are left as they were.
                       s.check("losses", losses, s.tol(c.V));
                       s.check(c.backward ? "dlogits" : "logits", logits, s.tol(c.V));
                     }});
}

// ---- optimizer updates --------------------------------------------------------------------

void optimizer_cases(std::vector<Case>& cases) {
  for (int64_t n : {int64_t(31), int64_t(1025 * 33 + 7)})
    for (int64_t step : {int64_t(1), int64_t(7)})
      cases.push_back({nm("adam_step", "n", n, "step", step), [n, step](Side& s) {
                         Tensor p = s.acc(Cls::M, {n});
                         Tensor g = s.randn(Cls::G, {n});
                         Tensor m = s.acc(Cls::M, {n}, 0.5);
                         Vec vv = s.normal(n, 0.7);
                         for (double& x : vv) x *= x;  // second moments are >= 0
                         Tensor v = s.in(Cls::M, {n}, vv);
                         // A large lr, so the update is O(1) against p and its error shows.
                         s.be.adam_step(p, g, m, v, AdamArgs{0.3, 0.8, 0.95, 1e-8, step});
                         s.check("p", p, s.tol());
                         s.check("m", m, s.tol());
                         s.check("v", v, s.tol());
                       }});

  for (int alias : {0, 1})
    cases.push_back({nm("muon_momentum", "rows", 1025, "cols", 33, "out", alias ? "g" : "new"),
                     [alias](Side& s) {
                       const Shape sh{1025, 33};
                       Tensor g = s.randn(Cls::G, sh), buf = s.acc(Cls::M, sh);
                       Tensor out = alias ? s.out_aliasing(g, Cls::G, sh) : s.out(Cls::G, sh);
                       s.be.muon_momentum(out, buf, g, 0.95);
                       s.check("out", out, s.tol());
                       s.check("buf", buf, s.tol());
                     }});

  cases.push_back({nm("axpy", "n", 1025 * 33 + 1, "alpha", -0.37), [](Side& s) {
                     const int64_t n = 1025 * 33 + 1;
                     Tensor y = s.acc(Cls::M, {n}), x = s.randn(Cls::G, {n});
                     s.be.axpy(y, x, -0.37);
                     s.check("y", y, s.tol());
                   }});

  // Newton-Schulz: 2-D and stacks, rows > cols and rows < cols, with and without the bf16
  // emulation. A backend computing in bf16 ignores bf16_round (backend.h), so its oracle
  // is the exact iteration (no rounding); an fp32 backend's oracle rounds where it rounds.
  for (Shape sh : {Shape{64, 33}, Shape{31, 96}, Shape{33, 33}, Shape{3, 32, 96}, Shape{2, 96, 32}})
    for (int round : {0, 1}) {
      std::ostringstream dims;
      for (size_t i = 0; i < sh.size(); ++i) dims << (i ? "x" : "") << sh[i];
      cases.push_back({nm("newton_schulz", "shape", dims.str(), "steps", 5, "bf16_round", round),
                       [sh, round](Side& s) {
                         const bool bf16_backend = s.tested.compute == DType::BF16;
                         Tensor G = s.randn(Cls::G, sh, 0.02), X = s.out(Cls::G, sh);
                         s.be.newton_schulz(X, G, 5, s.oracle && bf16_backend ? false : round);
                         const int64_t k = std::max(sh[sh.size() - 1], sh[sh.size() - 2]);
                         s.check("X", X, bf16_backend || round ? tol::kNewtonSchulzBf16 : s.tol(k));
                       }});
    }
}

// The optimizer's many-tensor ops. Tensors of many sizes (one element, a block's worth and
// more, one past a multiple of 8) and more of them than a GPU launch takes (48), so a call
// spans launches; compute copies on some, none on others.
void multi_tensor_cases(std::vector<Case>& cases) {
  auto sizes = [](int count) {
    std::vector<int64_t> n;
    for (int k = 0; k < count; ++k) n.push_back(k % 7 == 3 ? 1025 * 33 + 7 : 1 + (k * 37) % 300);
    return n;
  };
  for (int count : {3, 50})
    for (int64_t step : {int64_t(1), int64_t(7)})
      cases.push_back({nm("adam_steps", "tensors", count, "step", step), [=](Side& s) {
                         std::vector<AdamTensor> ts;
                         for (int64_t n : sizes(count)) {
                           AdamTensor t;
                           t.p = s.acc(Cls::M, {n});
                           t.g = s.randn(Cls::G, {n});
                           t.m = s.acc(Cls::M, {n}, 0.5);
                           Vec vv = s.normal(n, 0.7);
                           for (double& x : vv) x *= x;
                           t.v = s.in(Cls::M, {n}, vv);
                           t.lr = 0.3 / double(ts.size() + 1);  // each its own lr
                           ts.push_back(t);
                         }
                         const double master = s.tol();  // before the copies' dtype joins
                         for (size_t k = 0; k < ts.size(); k += 2)
                           ts[k].copy = s.out(Cls::C, {ts[k].p.numel()});
                         s.be.adam_steps(ts, AdamArgs{99.0, 0.8, 0.95, 1e-8, step});
                         for (const AdamTensor& t : ts) {
                           s.check("p", t.p, master);
                           s.check("m", t.m, master);
                           s.check("v", t.v, master);
                           if (!t.copy.empty()) s.check("copy", t.copy, s.tol());
                         }
                       }});

  cases.push_back({nm("muon_apply", "tensors", 50), [=](Side& s) {
                     std::vector<MuonApply> us;
                     for (int64_t n : sizes(50)) {
                       MuonApply u;
                       u.p = s.acc(Cls::M, {n});
                       // Every fourth update in the compute dtype (bf16 on a bf16 backend:
                       // another rank's copy from the exchange).
                       u.update = s.randn(us.size() % 4 == 1 ? Cls::C : Cls::G, {n});
                       u.alpha = -0.37 / double(us.size() + 1);
                       us.push_back(u);
                     }
                     const double master = s.tol();
                     for (size_t k = 1; k < us.size(); k += 2)
                       us[k].copy = s.out(Cls::C, {us[k].p.numel()});
                     s.be.muon_apply(us);
                     for (const MuonApply& u : us) {
                       s.check("p", u.p, master);
                       if (!u.copy.empty()) s.check("copy", u.copy, s.tol());
                     }
                   }});

  // The momentum alone (another rank's matrices): the buffers; the gradients are scratch.
  cases.push_back({nm("muon_momenta", "tensors", 50), [=](Side& s) {
                     std::vector<Tensor> bufs, grads;
                     for (int64_t n : sizes(50)) {
                       grads.push_back(s.randn(Cls::G, {n}, 0.02));
                       bufs.push_back(s.acc(Cls::M, {n}, 0.02));
                     }
                     s.be.muon_momenta(bufs, grads, 0.95);
                     for (const Tensor& b : bufs) s.check("buf", b, s.tol());
                   }});

  // Momentum and Newton-Schulz of a stack: wide and tall matrices, and a stack of 50.
  for (Shape sh : {Shape{3, 32, 96}, Shape{2, 96, 32}, Shape{50, 12, 8}})
    for (int round : {0, 1}) {
      std::ostringstream dims;
      for (size_t i = 0; i < sh.size(); ++i) dims << (i ? "x" : "") << sh[i];
      cases.push_back({nm("muon_stack", "shape", dims.str(), "bf16_round", round),
                       [sh, round](Side& s) {
                         const bool bf16_backend = s.tested.compute == DType::BF16;
                         const Shape one{sh[1], sh[2]};
                         std::vector<Tensor> bufs, grads;
                         for (int64_t k = 0; k < sh[0]; ++k) {
                           grads.push_back(s.randn(Cls::G, one, 0.02));
                           bufs.push_back(s.acc(Cls::M, one, 0.02));
                         }
                         const double master = s.tol();
                         Tensor X = s.out(Cls::G, sh);
                         Tensor input = s.be.muon_stack_needs_input() ? s.out(Cls::G, sh) : Tensor{};
                         s.be.muon_stack(X, input, bufs, grads, 0.95, 5,
                                         s.oracle && bf16_backend ? false : round);
                         const int64_t k = std::max(sh[1], sh[2]);
                         s.check("X", X, bf16_backend || round ? tol::kNewtonSchulzBf16 : s.tol(k));
                         for (size_t i = 0; i < bufs.size(); ++i) {
                           s.check("buf", bufs[i], master);
                           s.check("g (unchanged)", grads[i], 0.0);
                         }
                       }});
    }
}

std::vector<Case> all_cases() {
  std::vector<Case> c;
  memory_cases(c);
  matmul_cases(c);
  matmul_add_cases(c);
  embedding_cases(c);
  norm_cases(c);
  rotary_cases(c);
  attention_cases(c);
  elementwise_cases(c);
  head_cases(c);
  optimizer_cases(c);
  multi_tensor_cases(c);
  return c;
}

// ---- the suite ----------------------------------------------------------------------------

class Conformance : public ::testing::TestWithParam<std::tuple<Target, Case>> {};

TEST_P(Conformance, MatchesTheFp64Oracle) {
  const auto& [target, c] = GetParam();
  std::string why;
  if (!available(target, &why)) GTEST_SKIP() << label(target) << ": " << why << "; " << c.name
                                             << " was not checked";
  Backend& be = backend(target);
  const Precision p = resolve_precision(be, target.precision);
  const uint64_t seed = seed_of(c.name);
  Side got(be, p, p, false, seed);
  Side want(oracle(), kFp64, p, true, seed);
  c.body(got);
  if (HasFatalFailure()) return;
  c.body(want);
  ASSERT_EQ(got.outputs().size(), want.outputs().size()) << c.name;
  for (size_t i = 0; i < got.outputs().size(); ++i) {
    const Side::Output& o = got.outputs()[i];
    const Vec a = be.to_host_f64(o.t), r = oracle().to_host_f64(want.outputs()[i].t);
    const double err = rel_err(a, r);
    if (err <= o.tol) continue;
    // Where: the first NaN, else the largest difference.
    size_t at = 0;
    double worst = -1;
    for (size_t j = 0; j < std::min(a.size(), r.size()); ++j) {
      const double e = std::isnan(a[j] - r[j]) ? INFINITY : std::fabs(a[j] - r[j]);
      if (e > worst) worst = e, at = j;
      if (std::isinf(e)) break;
    }
    ADD_FAILURE() << label(target) << " " << c.name << ": " << o.what << " differs from the fp64 "
                  << "oracle by " << err << " (relative max-abs; tolerance " << o.tol
                  << "); element " << at << " is " << (at < a.size() ? a[at] : NAN)
                  << ", the oracle's " << (at < r.size() ? r[at] : NAN);
  }
}

std::string test_name(const ::testing::TestParamInfo<Conformance::ParamType>& info) {
  return label(std::get<0>(info.param)) + "_" + gtest_name(std::get<1>(info.param).name);
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance,
                         ::testing::Combine(::testing::ValuesIn(kTargets),
                                            ::testing::ValuesIn(all_cases())),
                         test_name);
INSTANTIATE_TEST_SUITE_P(Bf16Emulation, Conformance,
                         ::testing::Combine(::testing::ValuesIn(kEmulated),
                                            ::testing::ValuesIn(all_cases())),
                         test_name);

}  // namespace
}  // namespace speedrun::conformance
