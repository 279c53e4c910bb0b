// speedrun report: the HTML page holds one SVG path per series and run with the right
// number of points, overlays several runs, is self-contained, and refuses empty or
// malformed metrics with the file and line named.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>

#include "core/error.h"
#include "train/report.h"
#include "run_command.h"

using namespace speedrun;
namespace fs = std::filesystem;

namespace {


// A run of `steps` steps as the trainer writes it: validation every `val_every` and at the end.
void write_run(const fs::path& dir, int steps, int val_every, double scale) {
  fs::create_directories(dir);
  std::ofstream f(dir / "metrics.jsonl");
  for (int s = 0; s <= steps; ++s) {
    if (s % val_every == 0 || s == steps)
      f << "{\"step\":" << s << ",\"val_loss\":" << scale * (3.0 + 5.0 / (1 + s)) << ",\"window\":"
        << 64 * (1 + s / 10) << "}\n";
    if (s == steps) break;
    f << "{\"step\":" << s << ",\"train_loss\":" << scale * (3.1 + 5.0 / (1 + s))
      << ",\"lr\":" << (s < steps / 2 ? 1.0 : double(steps - s) / (steps / 2))
      << ",\"window\":" << 64 * (1 + s / 10) << ",\"momentum\":" << 0.85 + 0.1 * std::min(1.0, s / 20.0)
      << ",\"ms\":" << 100 + s << "}\n";
  }
}

// The d attribute of the path of `series` for run index `run`.
std::string path_of(const std::string& html, int run, const std::string& series) {
  const std::regex re("<path data-run=\"" + std::to_string(run) + "\" data-series=\"" + series +
                      "\" d=\"([^\"]*)\"");
  std::smatch m;
  return std::regex_search(html, m, re) ? m[1].str() : std::string("(none)");
}

size_t points(const std::string& d) {
  size_t n = 0;
  for (char c : d) n += c == 'M' || c == 'L';
  return n;
}

class Report : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("speedrun_test_report_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    write_run(dir / "a", 40, 10, 1.0);
    write_run(dir / "b", 60, 20, 1.1);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir);
  }
  fs::path dir;
};

}  // namespace

TEST_F(Report, EverySeriesOfEveryRunIsAPath) {
  const auto runs = load_report_runs({(dir / "a").string(), (dir / "b" / "metrics.jsonl").string()});
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].name, "a");
  EXPECT_EQ(runs[1].name, "b");
  const std::string html = render_report(runs, "two runs");
  const int steps[] = {40, 60}, vals[] = {5, 4};  // validations at 0,10,..,40 and 0,20,40,60
  for (int r = 0; r < 2; ++r) {
    for (const char* s : {"train_loss", "train_loss_time", "lr", "window", "momentum"})
      EXPECT_EQ(points(path_of(html, r, s)), size_t(steps[r])) << "run " << r << " " << s;
    for (const char* s : {"val_loss", "val_loss_time"})
      EXPECT_EQ(points(path_of(html, r, s)), size_t(vals[r])) << "run " << r << " " << s;
  }
  EXPECT_NE(html.find("<title>two runs</title>"), std::string::npos);
  EXPECT_NE(html.find(">a</td>"), std::string::npos);  // the legend names the runs
  EXPECT_NE(html.find(">b</td>"), std::string::npos);
  EXPECT_EQ(std::count(html.begin(), html.end(), '\n') > 20, true);
  EXPECT_EQ(html.find("<svg") != std::string::npos, true);
  // Self-contained: no script, no external resource.
  for (const char* bad : {"<script", "http://", "https://", "@import", "<link", "url(http"})
    EXPECT_EQ(html.find(bad), std::string::npos) << bad;
  // The two runs are drawn in different colors.
  const std::regex color("data-run=\"(\\d)\" data-series=\"lr\" d=\"[^\"]*\" stroke=\"(#[0-9A-Fa-f]{6})\"");
  std::vector<std::string> colors;
  for (std::sregex_iterator it(html.begin(), html.end(), color), end; it != end; ++it)
    colors.push_back((*it)[2].str());
  ASSERT_EQ(colors.size(), 2u);
  EXPECT_NE(colors[0], colors[1]);
}

// The runs table names what ran each run (run.json's launches: the commits and devices of
// its start and resumes, each once); "-" where run.json is missing, older or damaged.
TEST_F(Report, TheRunsTableNamesTheBuildAndDevice) {
  std::ofstream(dir / "a" / "run.json") << R"({"format": "speedrun-run", "run_id": "1", "launches": [
    {"step": 0, "speedrun": {"commit": "0123456789ab"}, "device": "cuda, NVIDIA H200, sm_90"},
    {"step": 5, "speedrun": {"commit": "0123456789ab"}, "device": "cpu, 2 threads"},
    {"step": 9, "speedrun": {"commit": "ba9876543210-dirty"}, "device": "cpu, 2 threads"}]})";
  std::ofstream(dir / "b" / "run.json") << "{ damaged";
  const auto runs = load_report_runs({(dir / "a").string(), (dir / "b").string()});
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].built_by, "0123456789ab; ba9876543210-dirty");
  EXPECT_EQ(runs[0].ran_on, "cuda, NVIDIA H200, sm_90; cpu, 2 threads");
  EXPECT_EQ(runs[1].built_by, "");
  const std::string html = render_report(runs, "builds");
  EXPECT_NE(html.find("<th>speedrun commit</th><th>device</th>"), std::string::npos);
  EXPECT_NE(html.find("<td>0123456789ab; ba9876543210-dirty</td><td>cuda, NVIDIA H200, sm_90; cpu, 2 threads</td>"),
            std::string::npos) << html;
  EXPECT_NE(html.find("<td>-</td><td>-</td></tr>"), std::string::npos) << html;
}

// The points follow the data: the LR path is flat (same y) while the multiplier is 1, and the
// loss path's y falls as the loss falls (SVG y grows downwards).
TEST_F(Report, PathsFollowTheData) {
  const std::string html = render_report(load_report_runs({(dir / "a").string()}), "one");
  auto coords = [](const std::string& d) {
    std::vector<std::pair<double, double>> p;
    const std::regex num("[ML]([-0-9.]+),([-0-9.]+)");
    for (std::sregex_iterator it(d.begin(), d.end(), num), end; it != end; ++it)
      p.emplace_back(std::stod((*it)[1].str()), std::stod((*it)[2].str()));
    return p;
  };
  const auto lr = coords(path_of(html, 0, "lr"));
  ASSERT_EQ(lr.size(), 40u);
  EXPECT_EQ(lr[0].second, lr[19].second);
  EXPECT_GT(lr[39].second, lr[20].second);  // decays: lower on screen = larger y
  const auto loss = coords(path_of(html, 0, "train_loss"));
  for (size_t i = 1; i < loss.size(); ++i) {
    EXPECT_GT(loss[i].first, loss[i - 1].first);
    EXPECT_GE(loss[i].second, loss[i - 1].second);
  }
  // Time axis: cumulative ms (100, 201, 303, ...), increasing.
  const auto t = coords(path_of(html, 0, "train_loss_time"));
  for (size_t i = 1; i < t.size(); ++i) EXPECT_GT(t[i].first, t[i - 1].first);
}

// loss_max zooms the loss charts on the end of the runs: their y axis stops at it, the
// early (higher) points leave the plot area above (clipped), the late ones stay inside; the
// schedules' charts are not cut.
TEST_F(Report, LossMaxCutsTheLossAxes) {
  const auto runs = load_report_runs({(dir / "a").string()});  // val loss 8.0 -> 3.12
  ReportOptions o;
  o.loss_max = 3.5;
  const std::string html = render_report(runs, o);
  const std::string full = render_report(runs, "uncut");
  const auto first_chart = [](const std::string& h) {
    const size_t a = h.find("<svg"), b = h.find("</svg>", a);
    return h.substr(a, b - a);
  };
  // The numbers the first group of `re` captures, in order.
  const auto captured = [](const std::string& text, const std::regex& re) {
    std::vector<double> v;
    for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it)
      v.push_back(std::stod((*it)[1].str()));
    return v;
  };
  const auto y_ticks = [&](const std::string& svg) {
    return captured(svg, std::regex("<text class=\"yt\"[^>]*>([-0-9.e]+)</text>"));
  };
  const auto cut = y_ticks(first_chart(html)), uncut = y_ticks(first_chart(full));
  ASSERT_FALSE(cut.empty());
  ASSERT_FALSE(uncut.empty());
  EXPECT_LE(*std::max_element(cut.begin(), cut.end()), 3.5 * 1.05);
  EXPECT_GT(*std::max_element(uncut.begin(), uncut.end()), 5.0);
  const auto ys = [&](const std::string& d) { return captured(d, std::regex("[ML][-0-9.]+,([-0-9.]+)")); };
  const auto val = ys(path_of(html, 0, "val_loss"));
  ASSERT_EQ(val.size(), 5u);
  EXPECT_LT(val.front(), 30.0);  // above the plot's top edge (mt = 30): off the chart
  EXPECT_GT(val.back(), 30.0);   // the last validation, 3.12, is inside
  EXPECT_NE(html.find("clip-path"), std::string::npos);
  EXPECT_NE(html.find("loss axes cut at 3.5"), std::string::npos);
  EXPECT_EQ(path_of(html, 0, "lr"), path_of(full, 0, "lr"));  // schedules unchanged
}

TEST_F(Report, EmptyMissingAndMalformedMetricsAreErrors) {
  fs::create_directories(dir / "empty");
  std::ofstream(dir / "empty" / "metrics.jsonl").close();
  auto expect_error = [&](const fs::path& p, const std::vector<std::string>& words) {
    try {
      load_report_runs({p.string()});
      ADD_FAILURE() << p << ": no error";
    } catch (const Error& e) {
      for (const auto& w : words)
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
    }
  };
  expect_error(dir / "empty", {"metrics.jsonl", "is empty"});
  fs::create_directories(dir / "none");
  expect_error(dir / "none", {"no metrics.jsonl"});
  expect_error(dir / "missing", {"missing"});
  fs::create_directories(dir / "bad");
  {
    std::ofstream f(dir / "bad" / "metrics.jsonl");
    f << "{\"step\":0,\"train_loss\":5.0}\n{\"step\":1,\"train_lo\n{\"step\":2,\"train_loss\":4.0}\n";
  }
  expect_error(dir / "bad", {"line 2", "not JSON"});
  {
    std::ofstream f(dir / "bad" / "metrics.jsonl");
    f << "{\"step\":0,\"loss\":5.0}\n";
  }
  expect_error(dir / "bad", {"line 1", "train_loss"});
  EXPECT_THROW(render_report({}, "x"), Error);

  // Through the binary: exit 1, the file named, no page written.
  const std::string out = (dir / "r.html").string();
  auto r = run_cli("report " + (dir / "empty").string() + " -o " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("is empty"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));
  r = run_cli("report " + (dir / "a").string() + " " + (dir / "b").string() + " -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream f(out);
  const std::string html((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(path_of(html, 1, "val_loss"), "(none)");
  // A target or an axis cut that is not a finite loss names its flag; no page is written.
  fs::remove(out);
  for (const std::string flag : {"--target-loss nan", "--loss-max inf", "--loss-max -1",
                                 "--loss-max nan"}) {
    r = run_cli("report " + (dir / "a").string() + " -o " + out + " " + flag);
    EXPECT_EQ(r.code, 1) << flag << ": " << r.out;
    EXPECT_NE(r.out.find("error: " + flag.substr(0, flag.find(' '))), std::string::npos)
        << flag << ": " << r.out;
    EXPECT_FALSE(fs::exists(out)) << flag;
  }
}

// A run being written (or one that crashed) may end in half a line: it is left out with a
// note, while a bad line before the last stays an error.
TEST_F(Report, AnIncompleteLastLineIsLeftOutWithANote) {
  fs::create_directories(dir / "live");
  const fs::path m = dir / "live" / "metrics.jsonl";
  const std::string good = "{\"step\":0,\"train_loss\":5.0}\n{\"step\":1,\"train_loss\":4.5}\n";
  std::ofstream(m) << good << "{\"step\":2,\"train_lo";
  const auto runs = load_report_runs({(dir / "live").string()});
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].metrics.train.size(), 2u);
  EXPECT_NE(runs[0].metrics.note.find(m.string() + " line 3 is incomplete"), std::string::npos)
      << runs[0].metrics.note;
  const std::string out = (dir / "live.html").string();
  auto r = run_cli("report " + (dir / "live").string() + " -o " + out);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("note: metrics " + m.string() + " line 3 is incomplete"),
            std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(out));
  // A complete file has no note; a cut line with its newline, or in the middle, is an error.
  std::ofstream(m) << good;
  EXPECT_TRUE(load_report_runs({(dir / "live").string()})[0].metrics.note.empty());
  for (const std::string& bad : {good + "{\"step\":2,\"train_lo\n",
                                "{\"step\":0,\"train_lo\n" + good}) {
    std::ofstream(m) << bad;
    r = run_cli("report " + (dir / "live").string() + " -o " + out);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.out.find("not JSON"), std::string::npos) << r.out;
  }
}

TEST_F(Report, NegativeStepsAreRefusedNamingTheFileAndLine) {
  fs::create_directories(dir / "neg");
  const fs::path m = dir / "neg" / "metrics.jsonl";
  std::ofstream(m) << "{\"step\":0,\"train_loss\":5.0}\n{\"step\":-5,\"train_loss\":4.0}\n";
  const auto r = run_cli("report " + (dir / "neg").string() + " -o " + (dir / "n.html").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("metrics " + m.string() + " line 2: \"step\" is -5"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir / "n.html"));
}

// Two runs in directories of the same name are told apart by their parents.
TEST_F(Report, ClashingNamesGetTheirParent) {
  write_run(dir / "x" / "run", 10, 5, 1.0);
  write_run(dir / "y" / "run", 10, 5, 1.0);
  const auto runs = load_report_runs({(dir / "x" / "run").string(), (dir / "y" / "run").string()});
  EXPECT_EQ(runs[0].name, "x/run");
  EXPECT_EQ(runs[1].name, "y/run");
}

// A directory named seed<k> is a sweep's run of seed k, grouped under its variant; one whose
// number no uint64 holds is a plain run (it was an uncaught std::out_of_range), and so is a
// sweep run's weights file whose step no int64 holds, which names no final weights.
TEST_F(Report, SeedDirectoriesBeyondAUint64AreAPlainRun) {
  write_run(dir / "v" / "seed18446744073709551615", 10, 5, 1.0);
  write_run(dir / "v" / "seed18446744073709551616", 10, 5, 1.0);
  std::ofstream(dir / "v" / "seed18446744073709551616" / "model_step99999999999999999999.safetensors");
  const ReportInputs in = load_report_inputs({(dir / "v" / "seed18446744073709551615").string(),
                                              (dir / "v" / "seed18446744073709551616").string()});
  ASSERT_EQ(in.records.size(), 2u);
  EXPECT_EQ(in.records[0].variant, "v");
  EXPECT_EQ(in.records[0].seed, 18446744073709551615u);
  EXPECT_EQ(in.records[1].variant, in.runs[1].name);
  EXPECT_EQ(in.records[1].seed, 0u);
}
