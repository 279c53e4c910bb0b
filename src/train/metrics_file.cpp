#include "train/metrics_file.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/json_input.h"

namespace speedrun {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  check(bool(f), "metrics ", path, ": cannot read it (check the path: a run's --out directory "
        "holds metrics.jsonl)");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> split_lines(std::string_view text, bool* ends_with_newline) {
  *ends_with_newline = text.empty() || text.back() == '\n';
  std::vector<std::string> lines;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

double number_or_nan(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j.at(key).is_number()) return NAN;
  return j.at(key).get<double>();
}

}  // namespace

MetricsLog read_metrics(const std::string& path) { return parse_metrics(read_text(path), path); }

MetricsLog parse_metrics(std::string_view text, const std::string& path) {
  bool nl = true;
  const auto lines = split_lines(text, &nl);
  MetricsLog m;
  size_t blank = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      ++blank;
      continue;
    }
    nlohmann::json j;
    try {
      j = parse_json(line);
    } catch (const nlohmann::json::exception&) {
      if (i + 1 == lines.size() && !nl) {  // a run writing it now, or one that crashed
        m.note = "metrics " + path + " line " + std::to_string(i + 1) +
                 " is incomplete (no newline, not JSON): a record still being written, or "
                 "cut by a crash; left out";
        break;
      }
      fail("metrics ", path, " line ", i + 1, ": not JSON (\"", line.substr(0, 60),
           line.size() > 60 ? "..." : "", "\"): pass a metrics.jsonl written by speedrun train");
    }
    check(j.is_object() && j.contains("step") && j["step"].is_number_integer(), "metrics ", path,
          " line ", i + 1, ": no integer \"step\": not a speedrun metrics record");
    const int64_t step = j["step"].get<int64_t>();
    check(step >= 0, "metrics ", path, " line ", i + 1, ": \"step\" is ", step,
          ", but steps count from 0: not a speedrun metrics record (fix or remove the line)");
    if (j.contains("train_loss") && j["train_loss"].is_number()) {
      MetricsLog::Train t;
      t.step = step;
      t.loss = j["train_loss"].get<double>();
      t.lr = number_or_nan(j, "lr");
      t.momentum = number_or_nan(j, "momentum");
      t.ms = number_or_nan(j, "ms");
      t.window = number_or_nan(j, "window");
      m.train.push_back(t);
    } else if (j.contains("val_loss") && j["val_loss"].is_number()) {
      MetricsLog::Val v;
      v.step = step;
      v.loss = j["val_loss"].get<double>();
      v.window = number_or_nan(j, "window");
      m.val.push_back(v);
    } else {
      fail("metrics ", path, " line ", i + 1,
           ": neither a numeric \"train_loss\" nor \"val_loss\": not a speedrun metrics record");
    }
  }
  check(!m.train.empty() || !m.val.empty(), "metrics ", path,
        lines.size() == blank ? " is empty" : " holds no record",
        ": the run wrote no step yet (wait for its first step, or check the directory)");
  return m;
}

int64_t keep_metrics_before(const std::string& src, const std::string& dst, int64_t step) {
  int64_t kept = 0;
  const std::string text =
      std::filesystem::exists(src) ? metrics_before(read_text(src), src, step, &kept) : "";
  AtomicFileWriter w(dst, "metrics");
  w.write(text.data(), text.size());
  w.commit();
  return kept;
}

std::string metrics_before(std::string_view text, const std::string& src, int64_t step,
                           int64_t* kept) {
  std::vector<std::string> keep;
  bool nl = true;
  const auto lines = split_lines(text, &nl);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = parse_json(lines[i]);
    } catch (const nlohmann::json::exception&) {
      if (i + 1 == lines.size() && !nl) break;  // cut by a crash mid-write
      fail("metrics ", src, " line ", i + 1, ": not JSON; fix or remove the line, then resume");
    }
    check(j.is_object() && j.contains("step") && j["step"].is_number_integer(), "metrics ", src,
          " line ", i + 1, ": no integer \"step\"; fix or remove the line, then resume");
    if (j["step"].get<int64_t>() < step) keep.push_back(lines[i]);
  }
  std::string out;
  for (const auto& l : keep) out += l + "\n";
  *kept = int64_t(keep.size());
  return out;
}

}  // namespace speedrun
