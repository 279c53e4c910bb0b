// Data layer: token shards, the record's data loader, the synthetic corpus, safetensors.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/step_loader.h"
#include "data/synthetic.h"

namespace fs = std::filesystem;
using namespace speedrun;

namespace {

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("speedrun_test_data_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // `count` shards <prefix>_<i>.bin of first + grow * i random tokens below `vocab`, their
  // paths appended to `files`; returns their tokens.
  std::vector<std::vector<uint16_t>> random_shards(const std::string& prefix, int count,
                                                   int64_t first, int64_t grow, int vocab,
                                                   uint32_t seed, std::vector<std::string>& files) {
    std::mt19937 gen(seed);
    std::vector<std::vector<uint16_t>> shards;
    for (int i = 0; i < count; ++i) {
      std::vector<uint16_t> t(size_t(first + grow * i));
      for (auto& v : t) v = uint16_t(gen() % uint32_t(vocab));
      files.push_back(path(prefix + "_" + std::to_string(i) + ".bin"));
      write_shard(files.back(), t.data(), int64_t(t.size()));
      shards.push_back(t);
    }
    return shards;
  }
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

// Runs fn, which must throw speedrun::Error whose message contains every piece.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& pieces) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : pieces)
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks \"" << p << "\": " << msg;
    return;
  }
  ADD_FAILURE() << "no speedrun::Error thrown; expected one mentioning " << pieces.at(0);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// A shard built by hand, byte by byte, independent of write_shard.
std::vector<uint8_t> raw_shard(int32_t magic, int32_t version, int32_t n,
                               const std::vector<uint16_t>& tokens) {
  std::vector<uint8_t> b(1024, 0);
  auto put = [&](int at, int32_t v) {
    for (int i = 0; i < 4; ++i) b[size_t(at * 4 + i)] = uint8_t(uint32_t(v) >> (8 * i));
  };
  put(0, magic);
  put(1, version);
  put(2, n);
  for (uint16_t t : tokens) {
    b.push_back(uint8_t(t & 0xff));
    b.push_back(uint8_t(t >> 8));
  }
  return b;
}

std::vector<uint16_t> iota_tokens(int64_t n, uint16_t first) {
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = uint16_t(first + i);
  return v;
}

int count_mappings(const std::string& needle) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line))
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

}  // namespace

// ---------------------------------------------------------------- shards

TEST_F(DataTest, ShardRoundTripMatchesTheByteLayout) {
  std::mt19937 gen(7);
  std::vector<uint16_t> tokens(1001);
  for (auto& t : tokens) t = uint16_t(gen());
  tokens[0] = 0;
  tokens[1] = 65535;
  const std::string p = path("a.bin");
  write_shard(p, tokens.data(), int64_t(tokens.size()));
  EXPECT_EQ(read_bytes(p), raw_shard(20240520, 1, 1001, tokens));
  EXPECT_EQ(listing(), std::vector<std::string>{"a.bin"});  // no temporary left behind

  Shard s = Shard::open(p);
  ASSERT_EQ(s.size(), 1001);
  EXPECT_EQ(s.path(), p);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), s.tokens()));
  EXPECT_EQ(read_shard_header(p), 1001);

  Shard moved = std::move(s);
  EXPECT_EQ(moved.size(), 1001);
  EXPECT_EQ(moved.tokens()[1], 65535);

  write_shard(path("empty.bin"), nullptr, 0);
  EXPECT_EQ(Shard::open(path("empty.bin")).size(), 0);
}

TEST_F(DataTest, EveryBadShardIsAnErrorNamingTheFile) {
  const std::vector<uint16_t> ten = iota_tokens(10, 1);
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    std::vector<std::string> says;
  };
  std::vector<uint8_t> trailing = raw_shard(20240520, 1, 10, ten);
  trailing.push_back(0);
  const std::vector<Case> cases = {
      {"magic.bin", raw_shard(20240521, 1, 10, ten), {"magic 20240521", "20240520"}},
      {"version.bin", raw_shard(20240520, 2, 10, ten), {"version 2"}},
      {"truncated.bin", raw_shard(20240520, 1, 11, ten), {"1044 bytes", "1046", "truncated"}},
      {"trailing.bin", trailing, {"1045 bytes", "1044", "1 trailing"}},
      {"negative.bin", raw_shard(20240520, 1, -3, {}), {"-3", "negative"}},
      {"short.bin", std::vector<uint8_t>(100, 0), {"100 bytes", "1024-byte header"}},
      {"empty.bin", {}, {"0 bytes"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string p = path(c.name);
    write_bytes(p, c.bytes);
    std::vector<std::string> says = c.says;
    says.insert(says.begin(), "shard " + p);
    expect_error([&] { Shard::open(p); }, says);
    expect_error([&] { read_shard_header(p); }, says);
  }
  const std::string missing = path("missing.bin");
  expect_error([&] { Shard::open(missing); }, {missing, "no such file"});
  expect_error([&] { read_shard_header(missing); }, {missing, "no such file"});
  fs::create_directory(path("adir"));
  expect_error([&] { Shard::open(path("adir")); }, {path("adir"), "directory"});
}

TEST_F(DataTest, WriteShardRefusesBadInputAndLeavesNoFile) {
  const std::vector<uint16_t> t = iota_tokens(4, 0);
  expect_error([&] { write_shard(path("nodir/x.bin"), t.data(), 4); },
               {path("nodir/x.bin"), "directory exist"});
  expect_error([&] { write_shard(path("x.bin"), t.data(), -1); }, {path("x.bin"), "-1"});
  expect_error([&] { write_shard(path("x.bin"), nullptr, 4); }, {path("x.bin")});
  EXPECT_TRUE(listing().empty());
  // Replacing a shard is all or nothing: a refused write keeps the old one intact.
  write_shard(path("x.bin"), t.data(), 4);
  EXPECT_THROW(write_shard(path("x.bin"), t.data(), int64_t(1) << 31), Error);
  EXPECT_EQ(Shard::open(path("x.bin")).size(), 4);
  EXPECT_EQ(listing(), std::vector<std::string>{"x.bin"});
}

TEST_F(DataTest, GlobSortsByNameAndNamesTheFlagWhenNothingMatches) {
  for (const char* n : {"s_002.bin", "s_000.bin", "s_010.bin", "s_001.bin", "other.txt"})
    write_bytes(path(n), {1});
  const std::vector<std::string> got = expand_glob(path("s_*.bin"), "--train");
  EXPECT_EQ(got, (std::vector<std::string>{path("s_000.bin"), path("s_001.bin"),
                                           path("s_002.bin"), path("s_010.bin")}));
  const std::string pattern = path("fineweb_train_*.bin");
  expect_error([&] { expand_glob(pattern, "--train"); },
               {"no files match --train '" + pattern + "'"});
  expect_error([&] { expand_glob(pattern, "--val"); }, {"--val"});
}

// ---------------------------------------------------------------- loader

namespace {

// The record's DistributedDataLoader, transcribed from its Python line by line.
struct RecordLoader {
  std::vector<std::vector<uint16_t>> shards;
  int64_t B, T, rank, world;
  int64_t current_shard = -1, current_position = 0;
  void reset() {
    current_shard = -1;
    advance();
  }
  void advance() {
    current_shard = (current_shard + 1) % int64_t(shards.size());
    current_position = rank * B * T;
  }
  // Returns (shard, position) of the batch, and fills x, y.
  std::pair<int64_t, int64_t> next_batch(std::vector<int32_t>& x, std::vector<int32_t>& y) {
    const int64_t batch_size = B * T * world;
    const auto& tokens = shards[size_t(current_shard)];
    std::vector<int32_t> buf(tokens.begin() + current_position,
                             tokens.begin() + current_position + B * T + 1);
    x.assign(buf.begin(), buf.end() - 1);
    y.assign(buf.begin() + 1, buf.end());
    std::pair<int64_t, int64_t> at{current_shard, current_position};
    current_position += batch_size;
    if (current_position + batch_size >= int64_t(tokens.size())) advance();
    return at;
  }
};

}  // namespace

TEST_F(DataTest, LoaderFollowsTheRecordAcrossShardsAndBackToShardZero) {
  // Shard 0 holds 0..49, shard 1 holds 1000..1039: a token says where it came from.
  write_shard(path("d_000.bin"), iota_tokens(50, 0).data(), 50);
  write_shard(path("d_001.bin"), iota_tokens(40, 1000).data(), 40);
  const std::vector<std::string> files = expand_glob(path("d_*.bin"), "--train");
  const int64_t B = 2, T = 4;  // B*T = 8, one step of 2 ranks = 16 tokens
  // Batch starts worked out by hand from SPEC.md: pos += 16, next shard when pos+16 >= N.
  const std::vector<std::vector<int>> expect_first_x = {
      {0, 16, 32, 1000, 1016, 0, 16},  // rank 0
      // rank 1: after 1008, pos = 24 and 24 + 16 >= 40, so it leaves shard 1 one batch
      // before rank 0 does (the record's loader lets ranks change shards at different steps)
      {8, 24, 1008, 8, 24},
  };
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    DataLoader loader(files, B, T, rank, 2, 2000);
    EXPECT_EQ(loader.tokens_per_batch(), 8);
    std::vector<int32_t> x(8), y(8);
    for (int first : expect_first_x[size_t(rank)]) {
      loader.next_batch(x.data(), y.data());
      for (int i = 0; i < 8; ++i) {
        ASSERT_EQ(x[size_t(i)], first + i) << "batch starting at " << first;
        ASSERT_EQ(y[size_t(i)], first + i + 1) << "batch starting at " << first;
      }
    }
    loader.reset();
    loader.next_batch(x.data(), y.data());
    EXPECT_EQ(x[0], expect_first_x[size_t(rank)][0]);
  }
}

TEST_F(DataTest, LoaderMatchesTheRecordTranscriptionOnRandomShards) {
  std::vector<std::string> files;
  const auto shards = random_shards("r", 3, 97, 53, 300, 3, files);
  for (int world : {1, 2, 3}) {
    for (int rank = 0; rank < world; ++rank) {
      SCOPED_TRACE("rank " + std::to_string(rank) + " of " + std::to_string(world));
      const int64_t B = 2, T = 5;
      DataLoader loader(files, B, T, rank, world, 300);
      RecordLoader ref{shards, B, T, rank, world};
      ref.reset();
      std::vector<int32_t> x(10), y(10), rx, ry;
      std::set<int64_t> shards_seen;
      for (int step = 0; step < 60; ++step) {
        loader.next_batch(x.data(), y.data());
        shards_seen.insert(ref.next_batch(rx, ry).first);
        ASSERT_EQ(x, rx) << "step " << step;
        ASSERT_EQ(y, ry) << "step " << step;
        ASSERT_EQ(loader.position().shard, ref.current_shard);
        ASSERT_EQ(loader.position().pos, ref.current_position);
      }
      EXPECT_EQ(shards_seen.size(), 3u);  // the run wrapped around all shards
    }
  }
}

TEST_F(DataTest, LoaderRejectsBadArgumentsAndShardsUpFront) {
  write_shard(path("ok.bin"), iota_tokens(33, 0).data(), 33);
  write_shard(path("small.bin"), iota_tokens(32, 0).data(), 32);
  // One step of B=2, T=4, world=4 needs 2*4*4 + 1 = 33 tokens.
  EXPECT_NO_THROW(DataLoader({path("ok.bin")}, 2, 4, 3, 4, 100));
  expect_error([&] { DataLoader({path("ok.bin"), path("small.bin")}, 2, 4, 0, 4, 100); },
               {path("small.bin"), "32 tokens", "33", "--batch", "--seq-len"});
  write_bytes(path("bad.bin"), raw_shard(1, 1, 0, {}));
  expect_error([&] { DataLoader({path("ok.bin"), path("bad.bin")}, 1, 4, 0, 1, 100); },
               {path("bad.bin"), "magic"});
  expect_error([&] { DataLoader({}, 1, 4, 0, 1, 100); }, {"no shard files"});
  expect_error([&] { DataLoader({path("ok.bin")}, 0, 4, 0, 1, 100); }, {"--batch"});
  expect_error([&] { DataLoader({path("ok.bin")}, 1, 4, 2, 2, 100); }, {"rank 2"});
  expect_error([&] { DataLoader({path("ok.bin")}, 1, 4, 0, 1, 0); }, {"--vocab"});
}

TEST_F(DataTest, LoaderRejectsTokensOutsideTheVocab) {
  std::vector<uint16_t> t = iota_tokens(100, 0);
  for (auto& v : t) v %= 512;
  t[37] = 600;
  write_shard(path("v.bin"), t.data(), 100);
  DataLoader loader({path("v.bin")}, 1, 8, 0, 1, 512);
  std::vector<int32_t> x(8), y(8);
  for (int b = 0; b < 4; ++b) loader.next_batch(x.data(), y.data());  // tokens 0..32
  // Token 37 is the target after x = 32..39 is read; the batch is refused whole.
  expect_error([&] { loader.next_batch(x.data(), y.data()); },
               {path("v.bin"), "token 600", "position 37", "vocab 512", "--vocab"});
  // The last target of a batch (one past x) is checked too.
  DataLoader whole({path("v.bin")}, 1, 37, 0, 1, 512);  // x = 0..36, y ends with token 37
  std::vector<int32_t> x37(37), y37(37);
  expect_error([&] { whole.next_batch(x37.data(), y37.data()); }, {"position 37"});
}

TEST_F(DataTest, LoaderResumesExactlyFromASavedPosition) {
  std::vector<std::string> files;
  random_shards("p", 2, 150, 31, 1000, 11, files);
  DataLoader a(files, 3, 4, 1, 2, 1000);
  std::vector<int32_t> x(12), y(12), x2(12), y2(12);
  for (int i = 0; i < 7; ++i) a.next_batch(x.data(), y.data());
  const DataLoader::Position saved = a.position();
  DataLoader b(files, 3, 4, 1, 2, 1000);
  b.seek(saved);
  EXPECT_EQ(b.position().shard, saved.shard);
  EXPECT_EQ(b.position().pos, saved.pos);
  for (int i = 0; i < 20; ++i) {
    a.next_batch(x.data(), y.data());
    b.next_batch(x2.data(), y2.data());
    ASSERT_EQ(x, x2) << "batch " << i;
    ASSERT_EQ(y, y2) << "batch " << i;
  }
  const std::vector<std::string> says = {"cannot resume", "--batch"};
  expect_error([&] { b.seek({2, 12}); }, says);    // no shard 2
  expect_error([&] { b.seek({0, 13}); }, says);    // not r*B*T + k*B*T*W
  expect_error([&] { b.seek({0, 0}); }, says);     // rank 1 never reads at 0
  expect_error([&] { b.seek({0, 132}); }, says);   // 132 + 24 >= 150: would have moved on
  EXPECT_NO_THROW(b.seek({0, 108}));               // 108 + 24 < 150
  // A position from a damaged meta.json near INT64_MAX: pos + B*T*W overflowed.
  expect_error([&] { b.seek({0, 12 + (INT64_MAX - 12) / 24 * 24}); }, says);
}

// A step's sequences are the record's: sequence s is what the record's rank s of `batch`
// ranks (B = 1) reads, however ranks and micro-batches split the step, across shard changes
// that the readers make at different steps; saved positions resume under another split.
TEST_F(DataTest, AStepReadsTheRecordsSequencesHoweverItIsSplit) {
  std::vector<std::string> files;
  const auto shards = random_shards("s", 3, 131, 47, 500, 5, files);
  const int64_t batch = 6, T = 4, steps = 40;
  // The record's readers, step by step: x of the whole step, and where each reader stands.
  std::vector<std::vector<int32_t>> want(steps);
  std::vector<std::vector<DataLoader::Position>> at(steps + 1);
  {
    std::vector<RecordLoader> ref;
    for (int64_t r = 0; r < batch; ++r) ref.push_back({shards, 1, T, r, batch});
    for (auto& l : ref) l.reset();
    for (int64_t s = 0; s <= steps; ++s) {
      for (const auto& l : ref) at[size_t(s)].push_back({l.current_shard, l.current_position});
      if (s == steps) break;
      std::vector<int32_t> x, y;
      for (auto& l : ref) {
        l.next_batch(x, y);
        want[size_t(s)].insert(want[size_t(s)].end(), x.begin(), x.end());
      }
    }
  }
  struct Split {
    int world;
    int64_t K, micro;
  };
  const std::vector<Split> splits = {{1, 1, 6}, {1, 6, 1}, {1, 2, 3}, {2, 3, 1}, {2, 1, 3},
                                     {3, 1, 2}, {6, 1, 1}};
  auto make = [&](const Split& sp) {
    std::vector<StepLoader> ranks;
    for (int r = 0; r < sp.world; ++r)
      ranks.emplace_back(files, sp.micro, T, sp.K, r, sp.world, 500);
    return ranks;
  };
  auto next_step = [](std::vector<StepLoader>& ranks) {  // every rank's x, in rank order
    std::vector<int32_t> step;
    for (StepLoader& l : ranks) {
      std::vector<int32_t> x(size_t(l.tokens_per_step())), y(x.size());
      l.next(x.data(), y.data());
      step.insert(step.end(), x.begin(), x.end());
    }
    return step;
  };
  for (const Split& sp : splits) {
    SCOPED_TRACE(std::to_string(sp.world) + " ranks x " + std::to_string(sp.K) + " x " +
                 std::to_string(sp.micro));
    std::vector<StepLoader> ranks = make(sp);
    for (int64_t s = 0; s < steps; ++s) {
      ASSERT_EQ(next_step(ranks), want[size_t(s)]) << "step " << s;
      std::vector<DataLoader::Position> all;
      for (const StepLoader& l : ranks)
        for (const auto& p : l.positions()) all.push_back(p);
      for (size_t i = 0; i < all.size(); ++i) {
        ASSERT_EQ(all[i].shard, at[size_t(s) + 1][i].shard) << "step " << s << " reader " << i;
        ASSERT_EQ(all[i].pos, at[size_t(s) + 1][i].pos) << "step " << s << " reader " << i;
      }
    }
  }
  // Saved at step 17 by one split, resumed by another: the same sequences from there on.
  std::vector<StepLoader> other = make({2, 3, 1});
  const std::vector<DataLoader::Position>& saved = at[17];
  for (int r = 0; r < 2; ++r)
    other[size_t(r)].seek({saved.begin() + 3 * r, saved.begin() + 3 * (r + 1)});
  for (int64_t s = 17; s < steps; ++s)
    ASSERT_EQ(next_step(other), want[size_t(s)]) << "resumed, step " << s;
}

// Validation reads one reader per micro-batch: the same tokens as one reader per sequence
// within a shard, and a split just over the tokens it validates holds all its batches
// (one-sequence readers each need a whole step past their own start).
TEST_F(DataTest, ValidationReadersNeedNoRoomForTheStagger) {
  const int64_t batch = 4, T = 8, steps = 5, step = batch * T;
  const std::vector<uint16_t> tokens = iota_tokens(steps * step + T, 0);  // just over 5 steps
  write_shard(path("v_000.bin"), tokens.data(), int64_t(tokens.size()));
  const std::vector<std::string> files = {path("v_000.bin")};
  StepLoader val(files, batch, T, 1, 0, 1, 1000, StepLoader::Readers::kPerMicroBatch);
  StepLoader train(files, batch, T, 1, 0, 1, 1000);
  EXPECT_EQ(val.readers(), 1);
  EXPECT_EQ(train.readers(), batch);
  EXPECT_EQ(val.steps_per_pass(), steps);
  EXPECT_LT(train.steps_per_pass(), steps);
  std::vector<int32_t> x(static_cast<size_t>(step)), y(x.size()), x2(x.size()), y2(x.size());
  for (int64_t s = 0; s + 1 < steps; ++s) {
    val.next(x.data(), y.data());
    train.next(x2.data(), y2.data());
    ASSERT_EQ(x, x2) << "step " << s;
    ASSERT_EQ(y, y2) << "step " << s;
  }
}

// Positions saved by readers of several sequences each (2 readers of 3: an older
// speedrun's one process of 2 micro-batches) become the one-sequence readers' positions:
// exactly the record's while those readers have changed shards with the record's, and a
// position the one-sequence readers reach after.
TEST_F(DataTest, PositionsOfReadersOfSeveralSequencesBecomeOneSequenceReaders) {
  std::vector<int64_t> sizes;
  std::vector<std::vector<uint16_t>> shards;
  std::vector<std::string> files;
  for (int i = 0; i < 2; ++i) {
    std::vector<uint16_t> t(size_t(140 + 23 * i), uint16_t(i));
    files.push_back(path("o_" + std::to_string(i) + ".bin"));
    write_shard(files.back(), t.data(), int64_t(t.size()));
    shards.push_back(t);
    sizes.push_back(int64_t(t.size()));
  }
  const int64_t batch = 6, T = 4;
  std::vector<DataLoader> old;
  for (int i = 0; i < 2; ++i) old.emplace_back(files, 3, T, i, 2, 500);
  std::vector<RecordLoader> ref;
  for (int64_t r = 0; r < batch; ++r) ref.push_back({shards, 1, T, r, batch});
  for (auto& l : ref) l.reset();
  std::vector<int32_t> x(12), y(12), rx, ry;
  int64_t exact = 0;
  bool moved = false;  // whether an old reader has changed shards yet
  for (int s = 0; s < 30; ++s) {
    const std::vector<DataLoader::Position> saved = {old[0].position(), old[1].position()};
    const auto got = one_sequence_positions(saved, batch, T, sizes);
    ASSERT_EQ(got.size(), size_t(batch));
    bool same = true;
    for (size_t r = 0; r < got.size(); ++r)
      same = same && got[r].shard == ref[r].current_shard && got[r].pos == ref[r].current_position;
    // Every converted position is one a one-sequence reader can stand at.
    for (int64_t r = 0; r < batch; ++r) {
      DataLoader one(files, 1, T, int(r), int(batch), 500);
      ASSERT_NO_THROW(one.seek(got[size_t(r)])) << "step " << s << " reader " << r;
    }
    moved = moved || old[0].position().shard != 0 || old[1].position().shard != 0;
    if (!moved) {
      EXPECT_TRUE(same) << "step " << s;
      exact += same;
    }
    for (auto& l : old) l.next_batch(x.data(), y.data());
    for (auto& l : ref) l.next_batch(rx, ry);
  }
  EXPECT_GT(exact, 3);
  expect_error([&] { one_sequence_positions({{0, 0}, {0, 4}, {0, 8}, {0, 12}}, batch, T, sizes); },
               {"4 data readers", "6 sequences"});
  // A position no reader stands at (past its shard's end: an edited checkpoint) is passed
  // on as it is, for seek to refuse, not turned into the next shard's start.
  const auto far = one_sequence_positions({{0, 120000}, {0, 12}}, batch, T, sizes);
  EXPECT_EQ(far[0].shard, 0);
  EXPECT_EQ(far[0].pos, 120000);
  EXPECT_EQ(far[2].pos, 120008);
  DataLoader first(files, 1, T, 0, int(batch), 500);
  expect_error([&] { first.seek(far[0]); }, {"cannot resume at shard 0 position 120000"});
}

TEST_F(DataTest, LoaderKeepsAtMostOneShardMapped) {
  std::vector<std::string> files;
  for (int i = 0; i < 3; ++i) {
    files.push_back(path("m_" + std::to_string(i) + ".bin"));
    write_shard(files.back(), iota_tokens(20, 0).data(), 20);
  }
  DataLoader loader(files, 1, 4, 0, 1, 100);
  std::vector<int32_t> x(4), y(4);
  for (int i = 0; i < 12; ++i) {
    loader.next_batch(x.data(), y.data());
    ASSERT_EQ(count_mappings(dir_.string()), 1) << "after batch " << i;
  }
}

// ---------------------------------------------------------------- synthetic corpus

namespace {

struct CorpusStats {
  double unigram = 0;       // H(token)
  double conditional = 0;   // H(next word | previous word), pairs inside one document
  std::vector<int64_t> doc_lengths;  // tokens from one eot to the next, eot included
};

CorpusStats measure(const std::vector<uint16_t>& c, int eot) {
  CorpusStats s;
  s.unigram = unigram_entropy(c.data(), int64_t(c.size()));
  std::map<std::pair<int, int>, int64_t> pair;
  std::map<int, int64_t> prev;
  int64_t pairs = 0;
  for (size_t i = 1; i < c.size(); ++i)
    if (c[i - 1] != eot && c[i] != eot) {
      ++pair[{c[i - 1], c[i]}];
      ++prev[c[i - 1]];
      ++pairs;
    }
  for (const auto& [k, n] : pair)
    s.conditional -= double(n) / double(pairs) * std::log(double(n) / double(prev[k.first]));
  int64_t last = -1;
  for (size_t i = 0; i < c.size(); ++i)
    if (c[i] == eot) {
      if (last >= 0) s.doc_lengths.push_back(int64_t(i) - last);
      last = int64_t(i);
    }
  return s;
}

}  // namespace

TEST(Synthetic, SameSeedSameBytesOtherSeedOtherBytes) {
  const auto a = make_synthetic_corpus(20000, 512, 0, 1);
  EXPECT_EQ(a, make_synthetic_corpus(20000, 512, 0, 1));
  EXPECT_NE(a, make_synthetic_corpus(20000, 512, 0, 2));
  EXPECT_NE(a, make_synthetic_corpus(20000, 512, 511, 1));
  // A prefix is the start of the longer stream, and generating in pieces changes nothing.
  const auto b = make_synthetic_corpus(777, 512, 0, 1);
  EXPECT_TRUE(std::equal(b.begin(), b.end(), a.begin()));
  SyntheticCorpus gen(512, 0, 1);
  std::vector<uint16_t> pieces(20000);
  gen.generate(pieces.data(), 5);
  gen.generate(pieces.data() + 5, 19995);
  EXPECT_EQ(pieces, a);
  // Another stream of the same language differs.
  SyntheticCorpus other(512, 0, 1, 1);
  std::vector<uint16_t> o(20000);
  other.generate(o.data(), 20000);
  EXPECT_NE(o, a);
  // Frozen: these tokens are part of the format of every synthetic shard on disk.
  const std::vector<uint16_t> head(a.begin(), a.begin() + 8);
  EXPECT_EQ(head[0], 0);
  EXPECT_EQ(head, (std::vector<uint16_t>{0, 57, 474, 151, 252, 462, 396, 442}));
}

TEST(Synthetic, DocumentsStartWithEotAndVaryInLength) {
  for (int eot : {0, 511, 200}) {
    SCOPED_TRACE("eot " + std::to_string(eot));
    const auto c = make_synthetic_corpus(300000, 512, eot, 5);
    EXPECT_EQ(c[0], eot);
    EXPECT_LT(*std::max_element(c.begin(), c.end()), 512);
    const CorpusStats s = measure(c, eot);
    ASSERT_GT(s.doc_lengths.size(), 500u);
    const auto [lo, hi] = std::minmax_element(s.doc_lengths.begin(), s.doc_lengths.end());
    EXPECT_GE(*lo, 16);
    EXPECT_LE(*hi, 700);
    EXPECT_LT(*lo, 25);   // short documents exist ...
    EXPECT_GT(*hi, 550);  // ... and long ones
    std::vector<int64_t> sorted = s.doc_lengths;
    std::sort(sorted.begin(), sorted.end());
    double mean = 0;
    for (int64_t l : sorted) mean += double(l) / double(sorted.size());
    EXPECT_LT(double(sorted[sorted.size() / 2]), 0.8 * mean);  // skewed: median << mean
  }
}

TEST(Synthetic, NextWordDependsOnThePreviousWordAndTheTopic) {
  const int vocab = 512, eot = 0;
  SyntheticCorpus gen(vocab, eot, 1234);
  gen.enable_oracle();
  std::vector<uint16_t> c(2'000'000);
  gen.generate(c.data(), int64_t(c.size()));
  const CorpusStats s = measure(c, eot);
  const double oracle = gen.oracle_nats() / double(gen.oracle_tokens());
  const double uniform = std::log(double(vocab - 1));
  std::printf("synthetic vocab %d: unigram %.3f nats (ln %d = %.3f), H(next|prev) %.3f, "
              "Bayes-optimal %.3f nats/token\n",
              vocab, s.unigram, vocab - 1, uniform, s.conditional, oracle);
  EXPECT_GT(s.unigram, uniform - 0.3);             // words are used almost uniformly
  EXPECT_LT(s.unigram, std::log(double(vocab)));
  EXPECT_LT(s.conditional, s.unigram - 2.0);       // a bigram model learns a lot ...
  EXPECT_GT(oracle, 1.0);                          // ... inferring the topic much more
  EXPECT_LT(oracle, 2.0);
  EXPECT_LT(oracle, s.conditional - 0.8);
}

TEST(Synthetic, TokenTextIsDistinctReadableWords) {
  EXPECT_EQ(synthetic_token_text(7, 512, 7), "<|eot|>");
  for (int vocab : {512, 65536}) {
    std::set<std::string> seen;
    for (int t = 0; t < vocab; ++t) {
      const std::string w = synthetic_token_text(t, vocab, 3);
      if (t == 3) continue;
      ASSERT_GE(w.size(), 4u);
      ASSERT_TRUE(std::all_of(w.begin(), w.end(), [](char ch) { return ch >= 'a' && ch <= 'z'; }))
          << w;
      ASSERT_TRUE(seen.insert(w).second) << "token " << t << " repeats " << w;
    }
  }
  EXPECT_THROW(synthetic_token_text(512, 512, 0), Error);
  EXPECT_THROW(SyntheticCorpus(4, 0, 1), Error);
  EXPECT_THROW(SyntheticCorpus(512, 512, 1), Error);
}

TEST(Synthetic, UnigramEntropyOfKnownDistributions) {
  const std::vector<uint16_t> two = {1, 2, 1, 2};
  EXPECT_NEAR(unigram_entropy(two.data(), 4), std::log(2.0), 1e-12);
  const std::vector<uint16_t> one(10, 9);
  EXPECT_EQ(unigram_entropy(one.data(), 10), 0.0);
  EXPECT_EQ(unigram_entropy(nullptr, 0), 0.0);
}

TEST_F(DataTest, SyntheticShardsAreWrittenOnceAndFeedTheLoader) {
  const std::string d = path("corpus");
  const auto files = write_synthetic_shards(d, 5000, 3000, 512, 0, 9);
  ASSERT_EQ(files, (std::vector<std::string>{d + "/synthetic_train_000000.bin",
                                             d + "/synthetic_val_000000.bin"}));
  Shard train = Shard::open(files[0]);
  ASSERT_EQ(train.size(), 5000);
  const auto expect = make_synthetic_corpus(5000, 512, 0, 9);
  EXPECT_TRUE(std::equal(expect.begin(), expect.end(), train.tokens()));
  Shard val = Shard::open(files[1]);
  ASSERT_EQ(val.size(), 3000);
  EXPECT_EQ(val.tokens()[0], 0);
  EXPECT_FALSE(std::equal(val.tokens(), val.tokens() + 3000, train.tokens()));

  struct stat before {}, after {};
  ASSERT_EQ(::stat(files[0].c_str(), &before), 0);
  write_bytes(d + "/synthetic_train_000007.bin", {1, 2, 3});  // a stale shard
  EXPECT_EQ(write_synthetic_shards(d, 5000, 3000, 512, 0, 9), files);
  ASSERT_EQ(::stat(files[0].c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);  // not rewritten
  EXPECT_FALSE(fs::exists(d + "/synthetic_train_000007.bin"));

  write_synthetic_shards(d, 5000, 3000, 512, 0, 10);  // another seed: new data
  const auto reseeded = make_synthetic_corpus(5000, 512, 0, 10);
  EXPECT_TRUE(std::equal(reseeded.begin(), reseeded.end(), Shard::open(files[0]).tokens()));

  DataLoader loader(expand_glob(d + "/synthetic_train_*.bin", "--train"), 4, 64, 0, 1, 512);
  std::vector<int32_t> x(256), y(256);
  loader.next_batch(x.data(), y.data());
  EXPECT_EQ(x[0], 0);
  EXPECT_EQ(x[1], y[0]);
}

// ---------------------------------------------------------------- safetensors

namespace {

// A safetensors file assembled by hand: length, header text as given, data.
void write_raw_safetensors(const std::string& path, const std::string& header,
                           const std::vector<uint8_t>& data, int64_t claimed_length = -1) {
  std::vector<uint8_t> b(8 + header.size() + data.size());
  const uint64_t n = claimed_length >= 0 ? uint64_t(claimed_length) : header.size();
  for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(n >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  std::copy(data.begin(), data.end(), b.begin() + 8 + std::ptrdiff_t(header.size()));
  write_bytes(path, b);
}

}  // namespace

TEST_F(DataTest, SafetensorsRoundTrip) {
  const std::vector<float> w = {1.5f, -2.0f, 0.25f, 3.0f, -0.0f, 1e-30f};
  std::vector<uint16_t> h(5);  // bf16 bit patterns
  for (int i = 0; i < 5; ++i) h[size_t(i)] = bf16_bits(float(i) - 2.5f);
  const int32_t scalar = -7;
  const std::vector<uint16_t> u = {1, 65535, 3};
  const std::vector<double> dd = {3.141592653589793};
  const std::string p = path("model.safetensors");
  write_safetensors(p,
                    {{"transformer.wte.weight", DType::F32, {2, 3}, w.data()},
                     {"h", DType::BF16, {5}, h.data()},
                     {"transformer.h.0.attn.lamb", DType::I32, {}, &scalar},
                     {"u", DType::U16, {3}, u.data()},
                     {"empty", DType::F32, {0, 4}, nullptr},
                     {"d", DType::F64, {1, 1}, dd.data()}},
                    {{"step", "125"}, {"format", "pt"}});
  EXPECT_EQ(listing(), std::vector<std::string>{"model.safetensors"});

  SafetensorsFile f = SafetensorsFile::open(p);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"step", "125"}, {"format", "pt"}}));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"transformer.wte.weight", "h",
                                                 "transformer.h.0.attn.lamb", "u", "empty", "d"}));
  EXPECT_TRUE(f.has("h"));
  EXPECT_FALSE(f.has("g"));

  auto v = f.get("transformer.wte.weight");
  EXPECT_EQ(v.dtype, DType::F32);
  EXPECT_EQ(v.shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(v.bytes, 24u);
  std::vector<float> w2(6);
  std::memcpy(w2.data(), v.data, 24);
  EXPECT_EQ(std::memcmp(w2.data(), w.data(), 24), 0);  // bitwise, -0.0 included

  v = f.get("h");
  EXPECT_EQ(v.dtype, DType::BF16);
  ASSERT_EQ(v.bytes, 10u);
  EXPECT_EQ(std::memcmp(v.data, h.data(), 10), 0);

  v = f.get("transformer.h.0.attn.lamb");
  EXPECT_EQ(v.dtype, DType::I32);
  EXPECT_TRUE(v.shape.empty());
  int32_t s2 = 0;
  ASSERT_EQ(v.bytes, 4u);
  std::memcpy(&s2, v.data, 4);
  EXPECT_EQ(s2, -7);

  v = f.get("u");
  EXPECT_EQ(v.dtype, DType::U16);
  EXPECT_EQ(std::memcmp(v.data, u.data(), 6), 0);
  EXPECT_EQ(f.get("empty").bytes, 0u);
  EXPECT_EQ(f.get("empty").shape, (std::vector<int64_t>{0, 4}));
  double d2 = 0;
  std::memcpy(&d2, f.get("d").data, 8);
  EXPECT_EQ(d2, dd[0]);

  expect_error([&] { f.get("lm_head.weight"); }, {p, "lm_head.weight", "transformer.wte.weight"});
}

TEST_F(DataTest, SafetensorsHeaderIsPlainJsonAsPythonReadsIt) {
  const std::vector<float> a = {1, 2, 3};
  const std::vector<uint16_t> b(3, bf16_bits(1.0f));
  const std::string p = path("x.safetensors");
  write_safetensors(p, {{"b", DType::BF16, {3}, b.data()}, {"a", DType::F32, {3}, a.data()}},
                    {{"k", "v"}});
  const std::vector<uint8_t> bytes = read_bytes(p);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[size_t(i)]) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 6 + 12);
  const std::string text(bytes.begin() + 8, bytes.begin() + 8 + long(n));
  const nlohmann::json j = nlohmann::json::parse(text);  // what Python's json.loads accepts
  EXPECT_EQ(j["__metadata__"], (nlohmann::json{{"k", "v"}}));
  EXPECT_EQ(j["b"]["dtype"], "BF16");
  EXPECT_EQ(j["b"]["shape"], (nlohmann::json{3}));
  EXPECT_EQ(j["b"]["data_offsets"], (nlohmann::json{0, 6}));
  EXPECT_EQ(j["a"]["dtype"], "F32");
  EXPECT_EQ(j["a"]["data_offsets"], (nlohmann::json{6, 18}));
  EXPECT_EQ(j.size(), 3u);
  const size_t last = text.find_last_not_of(' ');
  EXPECT_EQ(text[last], '}');  // padding is spaces only
  float a1 = 0;
  std::memcpy(&a1, bytes.data() + 8 + n + 6 + 4, 4);
  EXPECT_EQ(a1, 2.0f);
}

TEST_F(DataTest, SafetensorsRefusesBadFilesNamingThem) {
  std::vector<uint8_t> eight(8, 0);
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  struct Case {
    std::string name, header;
    std::vector<uint8_t> data;
    int64_t claimed;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      {"fine", ok, eight, -1, {}},
      {"truncated", ok, std::vector<uint8_t>(7, 0), -1, {"[0, 8]", "7 data bytes"}},
      {"length", ok, eight, 4096, {"header length 4096", "beyond the file"}},
      {"json", R"({"a":{"dtype":"F32",)", {}, -1, {"not valid JSON"}},
      {"array", "[1, 2]", {}, -1, {"not an object"}},
      {"dtype", R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", eight, -1,
       {"F8_E4M3", "not supported"}},
      {"range", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", eight, -1,
       {"[8, 16]", "outside"}},
      {"size", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight, -1,
       {"needs 12 bytes"}},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}})",
       eight, -1, {"overlap"}},
      {"negative", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight, -1,
       {"non-negative"}},
      {"fields", R"({"a":{"dtype":"F32","shape":[2]}})", eight, -1, {"data_offsets"}},
      {"metadata", R"({"__metadata__":{"step":3}})", {}, -1, {"not a string"}},
      // A million nested arrays: parsing is fine, printing the shape in the error message
      // recursed once per level and overflowed the stack.
      {"deep",
       R"({"a":{"dtype":"F32","shape":)" + std::string(1000000, '[') +
           std::string(1000000, ']') + R"(,"data_offsets":[0,8]}})",
       eight, -1, {"not valid JSON", "nested more than 512 levels"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string p = path(c.name + ".safetensors");
    write_raw_safetensors(p, c.header, c.data, c.claimed);
    if (c.says.empty()) {
      EXPECT_EQ(SafetensorsFile::open(p).get("a").bytes, 8u);
      continue;
    }
    std::vector<std::string> says = c.says;
    says.insert(says.begin(), "safetensors " + p);
    expect_error([&] { SafetensorsFile::open(p); }, says);
  }
  write_bytes(path("tiny.safetensors"), {1, 2, 3});
  expect_error([&] { SafetensorsFile::open(path("tiny.safetensors")); },
               {path("tiny.safetensors"), "3 bytes"});
  expect_error([&] { SafetensorsFile::open(path("none.safetensors")); },
               {path("none.safetensors"), "no such file"});
  // Cutting a real file anywhere in the data is caught.
  const std::vector<float> w(100, 1.0f);
  write_safetensors(path("w.safetensors"), {{"w", DType::F32, {10, 10}, w.data()}}, {});
  fs::resize_file(path("w.safetensors"), fs::file_size(path("w.safetensors")) - 1);
  expect_error([&] { SafetensorsFile::open(path("w.safetensors")); }, {"outside", "truncated"});
}

TEST_F(DataTest, SafetensorsWriteRefusesBadTensorsAndLeavesNoFile) {
  const float x = 1;
  expect_error([&] {
    write_safetensors(path("a.st"), {{"x", DType::F32, {}, &x}, {"x", DType::F32, {}, &x}}, {});
  }, {path("a.st"), "\"x\" given twice"});
  expect_error([&] { write_safetensors(path("a.st"), {{"x", DType::F32, {-1}, &x}}, {}); },
               {"invalid shape [-1]"});
  expect_error([&] { write_safetensors(path("a.st"), {{"x", DType::F32, {1}, nullptr}}, {}); },
               {"no data"});
  expect_error([&] { write_safetensors(path("no/a.st"), {{"x", DType::F32, {}, &x}}, {}); },
               {path("no/a.st"), "directory exist"});
  EXPECT_TRUE(listing().empty());
}
