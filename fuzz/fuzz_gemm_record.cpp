// The GEMM algorithm record (backend/cuda/gemm_record.h) as a run reads it: a text file
// that SPEEDRUN_GEMM_ALGOS may name, read with read_gemm_record, which must agree with
// parse_gemm_record on the same bytes. What is accepted holds what the CUDA backend relies
// on (alignments a power of two up to 256, a winner among its candidates, one entry per
// problem), and formats to a text that parses back to the same record (times to the four
// decimals the file keeps) and formats again to the same text.
#include <cmath>

#include "backend/cuda/gemm_record.h"
#include "fuzz_common.h"

namespace {

using speedrun::cuda::GemmRecord;
using speedrun::cuda::GemmRecordEntry;

bool same(const GemmRecord& a, const GemmRecord& b) {
  if (!(a.origin == b.origin) || a.tune != b.tune || a.entries.size() != b.entries.size())
    return false;
  auto close = [](double x, double y) { return std::fabs(x - y) <= 5.1e-5 * (1 + std::fabs(x)); };
  for (size_t i = 0; i < a.entries.size(); ++i) {
    const GemmRecordEntry &x = a.entries[i], &y = b.entries[i];
    if (!(x.key == y.key) || x.algo != y.algo || x.candidates != y.candidates ||
        x.chosen != y.chosen || !close(x.ms, y.ms) || !close(x.first_ms, y.first_ms))
      return false;
  }
  return true;
}

bool power_of_two_to_256(uint32_t v) { return v >= 1 && v <= 256 && (v & (v - 1)) == 0; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "fuzz/gemm_algos.tsv";
  const std::string text(fuzz::text(data, size));
  GemmRecord r;
  const bool ok = fuzz::parses(name, [&] { r = speedrun::cuda::parse_gemm_record(text, name); });
  fuzz::MemFile file(text);
  GemmRecord from_file;
  const bool ok_file = fuzz::parses(file.path(), [&] {
    fuzz::require(speedrun::cuda::read_gemm_record(file.path(), from_file),
                  "read_gemm_record says an existing file does not exist");
  });
  fuzz::require(ok == ok_file, "read_gemm_record disagrees with parse_gemm_record");
  if (!ok) return 0;
  fuzz::require(same(r, from_file), "read_gemm_record read another record than parse_gemm_record");

  fuzz::require(r.tune >= 1 && r.origin.sms >= 1, "an accepted record's tune or SMs is below 1");
  for (size_t i = 0; i < r.entries.size(); ++i) {
    const GemmRecordEntry& e = r.entries[i];
    fuzz::require(power_of_two_to_256(e.key.alignA) && power_of_two_to_256(e.key.alignB) &&
                      power_of_two_to_256(e.key.alignC),
                  "an accepted alignment is not a power of two up to 256");
    fuzz::require(e.candidates >= 1 && e.chosen >= 0 && e.chosen < e.candidates,
                  "an accepted winner is not among its candidates");
    fuzz::require(e.key.M >= 1 && e.key.N >= 1 && e.key.K >= 1 && e.key.batch >= 1,
                  "an accepted problem has an empty dimension");
    fuzz::require(r.find(e.key) == &e, "two accepted entries for one problem");
  }

  const std::string again = speedrun::cuda::format_gemm_record(r);
  GemmRecord back;
  fuzz::require(fuzz::parses(name, [&] { back = speedrun::cuda::parse_gemm_record(again, name); }),
                "the formatted text of an accepted record is refused");
  fuzz::require(same(r, back), "format then parse changed the record");
  fuzz::require(speedrun::cuda::format_gemm_record(back) == again,
                "formatting the parsed text again changed it");
  return 0;
}
