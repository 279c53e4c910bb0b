// The GEMM algorithm record: the cuBLASLt algorithm each GEMM problem took, in a text file,
// so that a run that timed its candidates (SPEEDRUN_GEMM_TUNE) and a run that resumes it,
// or repeats it, run every GEMM with the same algorithm and so sum in the same order: the
// same bits, without timing again. Plain C++ (no CUDA headers), so that tests check the
// format without a GPU and fuzz/fuzz_gemm_record.cpp runs in a CPU build; matmul.cu reads
// and extends it.
//
// The file (one line each, fields separated by tabs):
//   # speedrun GEMM algorithms ...                  comments: '#' lines, ignored
//   format  2
//   gpu     <name>  sm_<major><minor>  cublaslt <version>  sms <SMs>
//                                                  where the algorithms were chosen
//   tune    <N>                                    the candidates timed per problem
//   gemm    <M> <N> <K> <N|T> <N|T> <batch> <strideA> <strideB> <strideC> <a> <b> <c>
//           <=|+=> <alignA> <alignB> <alignC> <algo> <ms> <candidates> <chosen> <first_ms>
// where <algo> is cuBLASLt's opaque cublasLtMatmulAlgo_t as its 8 64-bit words in hex
// joined by ':', <ms> its time per run, <candidates> how many were timed, <chosen> its place
// in the heuristic's order (0: the heuristic's first) and <first_ms> the heuristic's first's
// time per run (0 where it did not run): what timing them gained on each problem.
// cublasLt.h: the algorithm "can be trivially serialized and later restored for use with
// the same version of cuBLAS library"; and which one a problem should take depends on the
// GPU, down to its number of SMs (cuBLAS repeats its bits only "on GPUs with the same
// architecture and the same number of SMs"; a MIG slice has the name and compute
// capability of its whole GPU, and fewer SMs). So a record names them and is refused where
// any differs (the fix: remove the file, which times them again). Format 2: SMs added, and
// a bf16 output's algorithms reduce split-K partial sums in fp32 (matmul.cu).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/gemm_plan.h"

namespace speedrun::cuda {

// Where a record's algorithms were chosen.
struct GemmRecordOrigin {
  std::string gpu;          // the device's name (cudaDeviceProp::name)
  int sm = 0;               // compute capability, major * 10 + minor
  size_t cublaslt = 0;      // cublasLtGetVersion()
  int sms = 0;              // streaming multiprocessors (cudaDeviceProp::multiProcessorCount)
  bool operator==(const GemmRecordOrigin&) const = default;
};

struct GemmRecordEntry {
  GemmKey key;
  std::array<uint64_t, 8> algo{};  // cublasLtMatmulAlgo_t::data
  double ms = 0;                   // the winner's time over its timed runs
  int candidates = 0;              // how many were timed
  int chosen = 0;                  // the winner's place in the heuristic's order
  double first_ms = 0;             // the heuristic's first's time (0: it did not run)
};

struct GemmRecord {
  GemmRecordOrigin origin;
  int tune = 0;  // SPEEDRUN_GEMM_TUNE of the run that timed them
  std::vector<GemmRecordEntry> entries;

  // The entry of `key`, or null.
  const GemmRecordEntry* find(const GemmKey& key) const;
};

// The file's text, and the record it holds. parse throws an Error naming `path`, the line
// and what is wrong in it (a damaged file, never half-read).
std::string format_gemm_record(const GemmRecord& r);
GemmRecord parse_gemm_record(const std::string& text, const std::string& path);

// Reads `path` (throws naming it when it exists but cannot be read); false when it does
// not exist.
bool read_gemm_record(const std::string& path, GemmRecord& r);
// Writes the record to `path` atomically (a crash leaves the old file or the new one),
// making its folder; throws naming the path.
void write_gemm_record(const std::string& path, const GemmRecord& r);

// "" when a record made at `made` may run here (`here`), else why not and the fix.
std::string gemm_record_mismatch(const std::string& path, const GemmRecordOrigin& made,
                                 const GemmRecordOrigin& here);

}  // namespace speedrun::cuda
