#include "backend/cuda/gemm_record.h"

#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

constexpr int kFormat = 2;
constexpr const char* kFix = "; remove the file to time the GEMMs again";

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> f;
  size_t at = 0;
  while (true) {
    const size_t tab = line.find('\t', at);
    f.push_back(line.substr(at, tab == std::string::npos ? std::string::npos : tab - at));
    if (tab == std::string::npos) return f;
    at = tab + 1;
  }
}

// Reads line `line` of `path`; every field is checked whole, so "12x" or "" are refused.
struct LineReader {
  const std::string& path;
  int line;

  [[noreturn]] void bad(const std::string& what) const {
    fail("GEMM algorithm record ", path, " line ", line, ": ", what, kFix);
  }
  int64_t integer(const std::string& s, const char* name, int64_t lo, int64_t hi) const {
    int64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty() || v < lo || v > hi)
      bad(std::string(name) + " '" + s + "' is not an integer in [" + std::to_string(lo) + ", " +
          std::to_string(hi) + "]");
    return v;
  }
  bool trans(const std::string& s, const char* name) const {
    if (s != "N" && s != "T") bad(std::string(name) + " '" + s + "' is not N or T");
    return s == "T";
  }
  DType dtype(const std::string& s, const char* name) const {
    for (DType t : {DType::BF16, DType::F32})
      if (s == dtype_name(t)) return t;
    bad(std::string(name) + " '" + s + "' is not BF16 or F32");
  }
  double time(const std::string& s, const char* name) const {
    double v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || !(v >= 0) || v > 1e9)
      bad(std::string(name) + " '" + s + "' is not a time in ms");
    return v;
  }
  uint32_t alignment(const std::string& s, const char* name) const {
    const int64_t v = integer(s, name, 1, 256);
    if ((v & (v - 1)) != 0) bad(std::string(name) + " " + s + " is not a power of two");
    return uint32_t(v);
  }
};

std::string algo_str(const std::array<uint64_t, 8>& a) {
  std::string s;
  char word[17];
  for (size_t i = 0; i < a.size(); ++i) {
    std::snprintf(word, sizeof word, "%016" PRIx64, a[i]);
    s += (i ? ":" : "") + std::string(word);
  }
  return s;
}

}  // namespace

const GemmRecordEntry* GemmRecord::find(const GemmKey& key) const {
  for (const GemmRecordEntry& e : entries)
    if (e.key == key) return &e;
  return nullptr;
}

std::string format_gemm_record(const GemmRecord& r) {
  std::ostringstream o;
  o << "# speedrun GEMM algorithms: the cuBLASLt algorithm each GEMM problem runs with, as\n"
       "# SPEEDRUN_GEMM_TUNE timed them (docs/CUDA.md). Columns of a gemm line: M N K transA\n"
       "# transB batch strideA strideB strideC dtypeA dtypeB dtypeC (=|+=) alignA alignB alignC\n"
       "# algorithm ms candidates chosen first_ms (chosen: the winner's place in the heuristic's\n"
       "# order; first_ms: the heuristic's first's time, 0 where it did not run).\n";
  o << "format\t" << kFormat << "\n";
  o << "gpu\t" << r.origin.gpu << "\tsm_" << r.origin.sm << "\tcublaslt " << r.origin.cublaslt
    << "\tsms " << r.origin.sms << "\n";
  o << "tune\t" << r.tune << "\n";
  for (const GemmRecordEntry& e : r.entries) {
    const GemmKey& k = e.key;
    char ms[32], first[32];
    std::snprintf(ms, sizeof ms, "%.4f", e.ms);
    std::snprintf(first, sizeof first, "%.4f", e.first_ms);
    o << "gemm\t" << k.M << "\t" << k.N << "\t" << k.K << "\t" << (k.transA ? "T" : "N") << "\t"
      << (k.transB ? "T" : "N") << "\t" << k.batch << "\t" << k.strideA << "\t" << k.strideB
      << "\t" << k.strideC << "\t" << dtype_name(k.a) << "\t" << dtype_name(k.b) << "\t"
      << dtype_name(k.c) << "\t" << (k.accumulate ? "+=" : "=") << "\t" << k.alignA << "\t"
      << k.alignB << "\t" << k.alignC << "\t" << algo_str(e.algo) << "\t" << ms << "\t"
      << e.candidates << "\t" << e.chosen << "\t" << first << "\n";
  }
  return o.str();
}

GemmRecord parse_gemm_record(const std::string& text, const std::string& path) {
  GemmRecord r;
  bool have_format = false, have_gpu = false, have_tune = false;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  constexpr int64_t kBig = int64_t(1) << 40;
  while (std::getline(in, line)) {
    ++n;
    const LineReader rd{path, n};
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> f = split_tabs(line);
    if (f[0] == "format") {
      if (have_format) rd.bad("a second format line");
      if (f.size() != 2) rd.bad("a format line has 1 field");
      const int64_t v = rd.integer(f[1], "format", 0, 1 << 20);
      if (v != kFormat)
        rd.bad("format " + f[1] + " is not " + std::to_string(kFormat) +
               " (written by another version of speedrun)");
      have_format = true;
    } else if (!have_format) {
      rd.bad("the file does not open with 'format " + std::to_string(kFormat) + "'");
    } else if (f[0] == "gpu") {
      if (have_gpu) rd.bad("a second gpu line: one record holds one GPU's algorithms");
      if (f.size() != 5 || f[2].rfind("sm_", 0) != 0 || f[3].rfind("cublaslt ", 0) != 0 ||
          f[4].rfind("sms ", 0) != 0)
        rd.bad("a gpu line is: gpu <name> sm_<NN> cublaslt <version> sms <SMs>");
      r.origin.gpu = f[1];
      r.origin.sm = int(rd.integer(f[2].substr(3), "the compute capability", 0, 10000));
      r.origin.cublaslt = size_t(rd.integer(f[3].substr(9), "cuBLASLt's version", 0, kBig));
      r.origin.sms = int(rd.integer(f[4].substr(4), "the number of SMs", 1, 1 << 20));
      have_gpu = true;
    } else if (f[0] == "tune") {
      if (have_tune) rd.bad("a second tune line");
      if (f.size() != 2) rd.bad("a tune line has 1 field");
      r.tune = int(rd.integer(f[1], "tune", 1, 1 << 10));
      have_tune = true;
    } else if (f[0] == "gemm") {
      if (f.size() != 22) rd.bad("a gemm line has 21 fields, not " + std::to_string(f.size() - 1));
      GemmRecordEntry e;
      GemmKey& k = e.key;
      k.M = rd.integer(f[1], "M", 1, kBig);
      k.N = rd.integer(f[2], "N", 1, kBig);
      k.K = rd.integer(f[3], "K", 1, kBig);
      k.transA = rd.trans(f[4], "transA");
      k.transB = rd.trans(f[5], "transB");
      k.batch = rd.integer(f[6], "batch", 1, kBig);
      k.strideA = rd.integer(f[7], "strideA", 0, kBig);
      k.strideB = rd.integer(f[8], "strideB", 0, kBig);
      k.strideC = rd.integer(f[9], "strideC", 0, kBig);
      k.a = rd.dtype(f[10], "dtypeA");
      k.b = rd.dtype(f[11], "dtypeB");
      k.c = rd.dtype(f[12], "dtypeC");
      if (f[13] != "=" && f[13] != "+=") rd.bad("'" + f[13] + "' is not = or +=");
      k.accumulate = f[13] == "+=";
      k.alignA = rd.alignment(f[14], "alignA");
      k.alignB = rd.alignment(f[15], "alignB");
      k.alignC = rd.alignment(f[16], "alignC");
      const std::string& a = f[17];
      if (a.size() != 8 * 17 - 1) rd.bad("the algorithm is not 8 words of 16 hex digits");
      for (size_t i = 0; i < 8; ++i) {
        const char* s = a.data() + i * 17;
        if (i > 0 && s[-1] != ':') rd.bad("the algorithm's words are not separated by ':'");
        const auto [p, ec] = std::from_chars(s, s + 16, e.algo[i], 16);
        if (ec != std::errc() || p != s + 16)
          rd.bad("the algorithm's word " + std::to_string(i) + " is not 16 hex digits");
      }
      e.ms = rd.time(f[18], "ms");
      e.candidates = int(rd.integer(f[19], "candidates", 1, 1 << 10));
      e.chosen = int(rd.integer(f[20], "chosen", 0, e.candidates - 1));
      e.first_ms = rd.time(f[21], "first_ms");
      if (r.find(k)) rd.bad("a second entry for " + gemm_key_str(k));
      r.entries.push_back(e);
    } else {
      rd.bad("unknown line '" + f[0] + "' (format, gpu, tune or gemm)");
    }
  }
  const LineReader end{path, n};
  if (!have_format) end.bad("the file is empty (no 'format' line)");
  if (!have_gpu) end.bad("no 'gpu' line: where the algorithms were chosen is unknown");
  if (!have_tune) end.bad("no 'tune' line");
  return r;
}

bool read_gemm_record(const std::string& path, GemmRecord& r) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  check(bool(f), "GEMM algorithm record ", path, ": cannot open it (", std::strerror(errno),
        "); fix its permissions or point SPEEDRUN_GEMM_ALGOS elsewhere");
  std::ostringstream s;
  s << f.rdbuf();
  check(!f.bad(), "GEMM algorithm record ", path, ": reading it failed");
  r = parse_gemm_record(s.str(), path);
  return true;
}

void write_gemm_record(const std::string& path, const GemmRecord& r) {
  const std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  check(!ec, "GEMM algorithm record ", path, ": cannot make its folder (", ec.message(), ")");
  const std::string text = format_gemm_record(r);
  AtomicFileWriter w(path, "GEMM algorithm record");
  w.write(text.data(), text.size());
  w.commit();
}

std::string gemm_record_mismatch(const std::string& path, const GemmRecordOrigin& made,
                                 const GemmRecordOrigin& here) {
  if (made == here) return "";
  auto str = [](const GemmRecordOrigin& o) {
    return o.gpu + " (sm_" + std::to_string(o.sm) + ", " + std::to_string(o.sms) +
           " SMs) with cuBLASLt " + std::to_string(o.cublaslt);
  };
  return "GEMM algorithm record " + path + " was made on " + str(made) + "; this process runs on " +
         str(here) + ", where its algorithms may not exist or sum alike: remove the file (or "
         "unset SPEEDRUN_GEMM_ALGOS) to time the GEMMs here, or run where it was made";
}

}  // namespace speedrun::cuda
