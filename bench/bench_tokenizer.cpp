// GPT-2 tokenizer throughput: MB/s of encode on ~20 MB of Debian's own English text
// (/usr/share/doc/*/copyright, then /usr/share/common-licenses, one document per file,
// repeated if short), on 1 thread and on all OpenMP threads (encode_batch). The first pass
// starts with empty word caches; the best of the next passes shows the steady state.
// It also writes the corpus (documents separated by NUL bytes) so that
// tools/tokenizer_oracle/bench.mjs can time tiktoken on exactly the same text, and times
// train_bpe (50,257 ids) on the corpus repeated to --train-mb MB (0 skips it).
//   bench_tokenizer [--mb 20] [--train-mb 100] [--corpus /tmp/speedrun_tokenizer_corpus.txt]
//                   [--dir GPT2_DIR]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/bpe_train.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> debian_text(size_t want_bytes) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/share/doc", ec))
    if (fs::is_regular_file(e.path() / "copyright")) files.push_back(e.path() / "copyright");
  for (const auto& e : fs::directory_iterator("/usr/share/common-licenses", ec))
    files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::set<fs::path> seen;  // many entries are symlinks to the same file
  std::vector<std::string> unique;
  for (const auto& f : files) {
    const fs::path real = fs::canonical(f, ec);
    if (ec || !fs::is_regular_file(real) || !seen.insert(real).second) continue;
    unique.push_back(read(real));
  }
  speedrun::check(!unique.empty(), "bench_tokenizer: no text found under /usr/share/doc");
  std::vector<std::string> docs;
  size_t total = 0;
  for (size_t i = 0; total < want_bytes; i = (i + 1) % unique.size()) {
    docs.push_back(unique[i]);
    total += unique[i].size();
  }
  return docs;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) try {
  double mb = 20, train_mb = 100;
  fs::path corpus = "/tmp/speedrun_tokenizer_corpus.txt";
  fs::path dir = speedrun::gpt2_tokenizer_dir();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--mb")) mb = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--train-mb")) train_mb = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--corpus")) corpus = argv[i + 1];
    else if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    else speedrun::fail("bench_tokenizer: unknown flag ", argv[i],
                        " (--mb, --train-mb, --corpus, --dir)");
  }
  const speedrun::Tokenizer tok = speedrun::Tokenizer::load(dir);
  const std::vector<std::string> docs = debian_text(static_cast<size_t>(mb * 1e6));
  std::vector<std::string_view> views(docs.begin(), docs.end());
  size_t bytes = 0;
  {
    std::ofstream out(corpus, std::ios::binary);
    for (size_t i = 0; i < docs.size(); ++i) {
      if (i) out.put('\0');
      out << docs[i];
      bytes += docs[i].size();
    }
  }
  std::printf("corpus: %zu documents, %.1f MB (written to %s)\n", docs.size(), bytes / 1e6,
              corpus.string().c_str());
  std::printf("%8s %12s %14s %14s %12s\n", "threads", "tokens", "cold MB/s", "warm MB/s",
              "warm Mtok/s");
  const int max_threads = omp_get_max_threads();
  for (int threads : {1, max_threads}) {
    if (threads == max_threads && threads == 1 && max_threads != 1) continue;
    omp_set_num_threads(threads);
    // Fresh caches for the cold pass: word caches are per thread and per tokenizer.
    const speedrun::Tokenizer fresh = speedrun::Tokenizer::load(dir);
    double t0 = now();
    auto ids = fresh.encode_batch(views);
    const double cold = now() - t0;
    double warm = 1e30;
    for (int r = 0; r < 3; ++r) {
      t0 = now();
      ids = fresh.encode_batch(views);
      warm = std::min(warm, now() - t0);
    }
    size_t tokens = 0;
    for (const auto& v : ids) tokens += v.size();
    std::printf("%8d %12zu %14.1f %14.1f %12.2f\n", threads, tokens, bytes / 1e6 / cold,
                bytes / 1e6 / warm, tokens / 1e6 / warm);
    if (max_threads == 1) break;
  }
  omp_set_num_threads(max_threads);
  if (train_mb > 0) {
    std::vector<std::string_view> train;
    size_t train_bytes = 0;
    for (size_t i = 0; train_bytes < train_mb * 1e6; i = (i + 1) % views.size()) {
      train.push_back(views[i]);
      train_bytes += views[i].size();
    }
    const double t0 = now();
    const speedrun::BpeVocab v = speedrun::train_bpe(train, 50257);
    std::printf("train_bpe: %.1f MB, %zu merges, %d threads: %.2f s\n", train_bytes / 1e6,
                v.merges.size(), max_threads, now() - t0);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
