#include "train/report.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <optional>

#include <fmt/format.h>

#include "core/error.h"
#include "train/run_dir.h"
#include "train/sweep.h"

namespace speedrun {

namespace {

// Distinguishable on white, in print and for common color-vision deficiencies (Okabe-Ito
// first, then tableau).
constexpr const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                   "#56B4E9", "#8c564b", "#7f7f7f", "#bcbd22", "#000000"};
constexpr int kNumColors = sizeof(kColors) / sizeof(kColors[0]);

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

struct Series {
  int run = 0;
  std::string id;  // data-series
  std::vector<std::pair<double, double>> pts;
  double width = 1.5;
  double opacity = 1.0;
  bool dots = false;
  std::string dash;  // stroke-dasharray, so identical schedules of several runs stay visible
  const char* key = "run";     // data-run="INDEX" or data-variant="INDEX"
  std::vector<double> lo, hi;  // a band: filled from lo to hi at each point's x (opacity: fill)
};

struct Chart {
  std::string title, xlabel, ylabel;
  bool logy = false;
  std::vector<Series> series;
  std::optional<double> target;  // a dashed horizontal line (the target loss)
  std::optional<double> y_max;   // the top of the y axis, when the data goes higher (clipped)
};

// ~n round tick values covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int n) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  if (!std::isfinite(span)) return {lo, hi};  // -1e308 .. 1e308
  const double raw = span / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  // Ticks first*step .. last*step, counted rather than stepped: where step is below the
  // values' resolution (steps 1e17 and 1e17 + 16), v += step would never move.
  const double first = std::ceil(lo / step), last = std::floor(hi / step + 1e-9);
  if (!(last - first >= 0 && last - first <= 4.0 * n)) return {lo, hi};
  std::vector<double> t;
  for (int i = 0; i <= int(last - first); ++i) {
    const double v = (first + i) * step;
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

std::string tick_label(double v, double step) {
  if (std::fabs(v) >= 1e5 || (std::fabs(v) > 0 && std::fabs(v) < 1e-3)) return fmt::format("{:.2g}", v);
  int dec = 0;  // the fewest decimals that write the tick step exactly (0.25 -> 2)
  while (dec < 6) {
    const double k = step * std::pow(10.0, dec);
    if (std::fabs(k - std::round(k)) < 1e-6 * std::max(1.0, k)) break;
    ++dec;
  }
  return fmt::format("{:.{}f}", v, dec);
}

std::string render_chart(const Chart& c, int id) {
  constexpr double W = 560, H = 300, ml = 62, mr = 14, mt = 30, mb = 46;
  const double pw = W - ml - mr, ph = H - mt - mb;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : c.series)
    for (size_t i = 0; i < s.pts.size(); ++i) {
      const auto [x, y] = s.pts[i];
      for (double v : {y, s.lo.empty() ? y : s.lo[i], s.hi.empty() ? y : s.hi[i]}) {
        if (!std::isfinite(x) || !std::isfinite(v) || (c.logy && v <= 0)) continue;
        x0 = std::min(x0, x), x1 = std::max(x1, x);
        y0 = std::min(y0, v), y1 = std::max(y1, v);
      }
    }
  if (std::isfinite(x0) && c.target && std::isfinite(*c.target) && (!c.logy || *c.target > 0))
    y0 = std::min(y0, *c.target), y1 = std::max(y1, *c.target);
  if (c.y_max && *c.y_max > y0) y1 = std::min(y1, *c.y_max);
  std::string svg = fmt::format(
      "<svg class=\"chart\" viewBox=\"0 0 {} {}\" width=\"{}\" height=\"{}\" role=\"img\" "
      "aria-label=\"{}\">\n<text class=\"title\" x=\"{}\" y=\"18\">{}</text>\n",
      W, H, W, H, escape(c.title), ml, escape(c.title));
  if (!std::isfinite(x0)) {
    svg += fmt::format("<text class=\"empty\" x=\"{}\" y=\"{}\">no data</text>\n</svg>\n",
                       ml + pw / 2, mt + ph / 2);
    return svg;
  }
  if (x1 == x0) x0 -= 1, x1 += 1;
  if (y1 == y0) {
    const double d = y0 == 0 ? 1 : std::fabs(y0) * 0.05;
    y0 -= d, y1 += d;
  }
  auto fy = [&](double y) { return c.logy ? std::log(y) : y; };
  double fy0 = fy(y0), fy1 = fy(y1);
  const double pad = (fy1 - fy0) * 0.04;
  fy0 -= pad, fy1 += pad;
  if (!c.logy && y0 >= 0 && fy0 < 0) fy0 = 0;
  auto X = [&](double x) { return ml + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return mt + ph - (fy(y) - fy0) / (fy1 - fy0) * ph; };

  // Grid, ticks, axes.
  svg += "<g class=\"grid\">\n";
  const auto xt = nice_ticks(x0, x1, 6);
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1;
  for (double v : xt)
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\"/>"
                       "<text class=\"xt\" x=\"{0:.1f}\" y=\"{3}\">{4}</text>\n",
                       X(v), mt, mt + ph, mt + ph + 16, tick_label(v, xstep));
  const double ylo = c.logy ? std::exp(fy0) : fy0, yhi = c.logy ? std::exp(fy1) : fy1;
  const auto yt = nice_ticks(ylo, yhi, 5);
  const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  for (double v : yt) {
    if (c.logy && v <= 0) continue;
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\"/>"
                       "<text class=\"yt\" x=\"{3}\" y=\"{4:.1f}\">{5}</text>\n",
                       ml, Y(v), ml + pw, ml - 6, Y(v) + 4, tick_label(v, ystep));
  }
  svg += "</g>\n";
  svg += fmt::format("<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", ml,
                     mt, pw, ph);
  svg += fmt::format("<text class=\"xl\" x=\"{}\" y=\"{}\">{}</text>\n", ml + pw / 2, H - 8,
                     escape(c.xlabel));
  svg += fmt::format(
      "<text class=\"yl\" transform=\"translate(14 {}) rotate(-90)\">{}{}</text>\n",
      mt + ph / 2, escape(c.ylabel), c.logy ? " (log scale)" : "");
  svg += fmt::format("<clipPath id=\"plot{}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>"
                     "</clipPath>\n<g clip-path=\"url(#plot{})\">\n",
                     id, ml, mt, pw, ph, id);
  for (const auto& s : c.series) {
    const char* color = kColors[s.run % kNumColors];
    if (!s.lo.empty()) {  // a band: along the top edge, back along the bottom one
      std::string top, bottom;
      for (size_t i = 0; i < s.pts.size(); ++i) {
        const double x = s.pts[i].first, lo = s.lo[i], hi = s.hi[i];
        if (!std::isfinite(x) || !std::isfinite(lo) || !std::isfinite(hi) || (c.logy && lo <= 0))
          continue;
        top += fmt::format("{}{:.1f},{:.1f}", top.empty() ? "M" : " L", X(x), Y(hi));
        bottom = fmt::format(" L{:.1f},{:.1f}", X(x), Y(lo)) + bottom;
      }
      if (!top.empty())
        svg += fmt::format("<path data-{}=\"{}\" data-series=\"{}\" data-band=\"min-max\" "
                           "d=\"{}{} Z\" fill=\"{}\" fill-opacity=\"{}\" stroke=\"none\"/>\n",
                           s.key, s.run, s.id, top, bottom, color, s.opacity);
      continue;
    }
    std::string d;
    bool pen = false;
    for (auto [x, y] : s.pts) {
      if (!std::isfinite(x) || !std::isfinite(y) || (c.logy && y <= 0)) {
        pen = false;
        continue;
      }
      d += fmt::format("{}{:.1f},{:.1f}", pen ? " L" : (d.empty() ? "M" : " M"), X(x), Y(y));
      pen = true;
    }
    svg += fmt::format(
        "<path data-{}=\"{}\" data-series=\"{}\" d=\"{}\" stroke=\"{}\" stroke-width=\"{}\" "
        "stroke-opacity=\"{}\" fill=\"none\" stroke-linejoin=\"round\"{}/>\n",
        s.key, s.run, s.id, d, color, s.width, s.opacity,
        s.dash.empty() ? std::string() : " stroke-dasharray=\"" + s.dash + "\"");
    if (s.dots && s.pts.size() <= 80)
      for (auto [x, y] : s.pts)
        if (std::isfinite(x) && std::isfinite(y) && (!c.logy || y > 0))
          svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{:g}: "
                             "{:.4f}</title></circle>\n",
                             X(x), Y(y), color, x, y);
  }
  if (c.target && std::isfinite(*c.target) && (!c.logy || *c.target > 0))
    svg += fmt::format("<line class=\"target\" data-target=\"{0:g}\" x1=\"{1}\" y1=\"{2:.1f}\" "
                       "x2=\"{3}\" y2=\"{2:.1f}\"/><text class=\"tl\" x=\"{4}\" y=\"{5:.1f}\">"
                       "target {0:g}</text>\n",
                       *c.target, ml, Y(*c.target), ml + pw, ml + pw - 4, Y(*c.target) - 4);
  svg += "</g>\n</svg>\n";
  return svg;
}

// Keeps at most ~max points (every k-th and the last), so a long run's page stays small.
std::vector<std::pair<double, double>> thin(std::vector<std::pair<double, double>> p, size_t max) {
  if (p.size() <= max) return p;
  const size_t k = (p.size() + max - 1) / max;
  std::vector<std::pair<double, double>> o;
  for (size_t i = 0; i < p.size(); i += k) o.push_back(p[i]);
  if (o.back() != p.back()) o.push_back(p.back());
  return o;
}

// Thins a series to at most ~max points (every k-th and the last), its band with it.
Series thinned(Series s, size_t max) {
  if (s.pts.size() <= max) return s;
  const size_t k = (s.pts.size() + max - 1) / max;
  Series o = s;
  o.pts.clear(), o.lo.clear(), o.hi.clear();
  const auto keep = [&](size_t i) {
    o.pts.push_back(s.pts[i]);
    if (!s.lo.empty()) o.lo.push_back(s.lo[i]), o.hi.push_back(s.hi[i]);
  };
  for (size_t i = 0; i < s.pts.size(); i += k) keep(i);
  if ((s.pts.size() - 1) % k != 0) keep(s.pts.size() - 1);
  return o;
}

// The values of a group's runs at each step, and each run's training time there.
struct Pooled {
  std::vector<double> y, t;
};
using Pool = std::map<int64_t, Pooled>;

// The group's series: at each step, the mean over the runs that have the step (x: the step,
// or the mean training time there); with `band`, the min and max too.
Series pooled_series(const Pool& pool, int group, const char* id, bool time_axis, bool band) {
  Series s;
  s.run = group;
  s.id = id;
  s.key = "variant";
  for (const auto& [step, p] : pool) {
    double sum = 0, lo = INFINITY, hi = -INFINITY, t = 0;
    int n = 0;
    for (size_t i = 0; i < p.y.size(); ++i) {
      if (!std::isfinite(p.y[i])) continue;
      sum += p.y[i], t += p.t[i], ++n;
      lo = std::min(lo, p.y[i]), hi = std::max(hi, p.y[i]);
    }
    if (n == 0) continue;
    s.pts.emplace_back(time_axis ? t / n : double(step), sum / n);
    if (band) s.lo.push_back(lo), s.hi.push_back(hi);
  }
  return s;
}

const char* kDash[] = {"", "8 5", "2 4", "12 4 2 4"};

// One run's line.
Series run_line(int run, const char* id, std::vector<std::pair<double, double>> pts, double width,
                double opacity, bool dots, const std::string& dash) {
  Series s;
  s.run = run, s.id = id, s.pts = std::move(pts), s.width = width, s.opacity = opacity;
  s.dots = dots, s.dash = dash;
  return s;
}

std::string swatch(int color) {
  return fmt::format("<span class=\"sw\" style=\"background:{}\"></span>", kColors[color % kNumColors]);
}

}  // namespace

std::string render_report(const std::vector<ReportRun>& runs, const std::string& title) {
  ReportOptions o;
  o.title = title;
  return render_report(runs, o);
}

std::string render_report(const std::vector<ReportRun>& runs, const ReportOptions& o) {
  check(!runs.empty(), "report: no run given");
  constexpr size_t kMaxPoints = 3000;
  Chart loss{"Loss against step", "step", "loss", true, {}, o.target_loss, o.loss_max};
  Chart loss_t{"Loss against training time", "training time (s)", "loss", true, {}, o.target_loss,
               o.loss_max};
  Chart lr{"LR multiplier", "step", "multiplier of every group's LR", false, {}, std::nullopt,
           std::nullopt};
  Chart win{"Attention window", "step", "window (tokens)", false, {}, std::nullopt,
            std::nullopt};
  Chart mom{"Muon momentum", "step", "momentum", false, {}, std::nullopt, std::nullopt};
  // Training time: cumulative "ms" of the training steps (validation excluded); a
  // validation at step s comes after the steps before s.
  double max_ms = 0;
  std::vector<std::vector<double>> cum(runs.size());
  for (size_t r = 0; r < runs.size(); ++r) {
    double t = 0;
    for (const auto& s : runs[r].metrics.train) {
      t += std::isfinite(s.ms) ? s.ms : 0;
      cum[r].push_back(t);
    }
    max_ms = std::max(max_ms, t);
  }
  const double unit = max_ms > 2 * 3600e3 ? 3600e3 : max_ms > 300e3 ? 60e3 : 1e3;
  loss_t.xlabel = unit == 3600e3 ? "training time (h)" : unit == 60e3 ? "training time (min)"
                                                                     : "training time (s)";
  // The time after the training steps before `step`.
  const auto time_before = [&](size_t r, int64_t step) {
    double t = 0;
    const auto& train = runs[r].metrics.train;
    for (size_t i = 0; i < train.size() && train[i].step < step; ++i) t = cum[r][i];
    return t;
  };

  // Groups, in the order they first appear; each run's color is its group's.
  const bool grouped = std::any_of(runs.begin(), runs.end(), [](const ReportRun& r) { return !r.group.empty(); });
  std::vector<std::string> groups;
  std::vector<int> color(runs.size());
  for (size_t r = 0; r < runs.size(); ++r) {
    if (!grouped) {
      color[r] = int(r);
      continue;
    }
    const std::string g = runs[r].group.empty() ? runs[r].name : runs[r].group;
    auto it = std::find(groups.begin(), groups.end(), g);
    if (it == groups.end()) it = groups.insert(groups.end(), g);
    color[r] = int(it - groups.begin());
  }

  if (!grouped) {
    for (size_t r = 0; r < runs.size(); ++r) {
      const int ri = int(r);
      const auto& m = runs[r].metrics;
      std::vector<std::pair<double, double>> tl, tlt, l, w, mu, vl, vlt;
      for (size_t i = 0; i < m.train.size(); ++i) {
        const auto& s = m.train[i];
        tl.emplace_back(double(s.step), s.loss);
        tlt.emplace_back(cum[r][i] / unit, s.loss);
        l.emplace_back(double(s.step), s.lr);
        w.emplace_back(double(s.step), s.window);
        mu.emplace_back(double(s.step), s.momentum);
      }
      for (const auto& v : m.val) {
        vl.emplace_back(double(v.step), v.loss);
        vlt.emplace_back(time_before(r, v.step) / unit, v.loss);
      }
      const double op = runs.size() > 1 ? 0.45 : 0.6;
      loss.series.push_back(run_line(ri, "train_loss", thin(tl, kMaxPoints), 1.0, op, false, ""));
      loss.series.push_back(run_line(ri, "val_loss", thin(vl, kMaxPoints), 2.5, 1.0, true, ""));
      loss_t.series.push_back(run_line(ri, "train_loss_time", thin(tlt, kMaxPoints), 1.0, op, false, ""));
      loss_t.series.push_back(run_line(ri, "val_loss_time", thin(vlt, kMaxPoints), 2.5, 1.0, true, ""));
      // Schedules are often equal across runs: later runs dashed, so each stays visible.
      const std::string dash = kDash[r % 4];
      lr.series.push_back(run_line(ri, "lr", thin(l, kMaxPoints), 2.0, 1.0, false, dash));
      win.series.push_back(run_line(ri, "window", thin(w, kMaxPoints), 2.0, 1.0, false, dash));
      mom.series.push_back(run_line(ri, "momentum", thin(mu, kMaxPoints), 2.0, 1.0, false, dash));
    }
  } else {
    // Bands first, so every group's mean line is drawn over all the bands.
    std::vector<Series> bands, bands_t, lines, lines_t;
    for (size_t g = 0; g < groups.size(); ++g) {
      Pool train, val, l, w, mu;
      for (size_t r = 0; r < runs.size(); ++r) {
        if (color[r] != int(g)) continue;
        const auto& m = runs[r].metrics;
        for (size_t i = 0; i < m.train.size(); ++i) {
          const auto& s = m.train[i];
          const double t = cum[r][i] / unit;
          train[s.step].y.push_back(s.loss), train[s.step].t.push_back(t);
          l[s.step].y.push_back(s.lr), l[s.step].t.push_back(t);
          w[s.step].y.push_back(s.window), w[s.step].t.push_back(t);
          mu[s.step].y.push_back(s.momentum), mu[s.step].t.push_back(t);
        }
        for (const auto& v : m.val)
          val[v.step].y.push_back(v.loss), val[v.step].t.push_back(time_before(r, v.step) / unit);
      }
      const int gi = int(g);
      const auto series = [&](const Pool& p, const char* id, bool time_axis, bool band, double width,
                              double opacity, bool dots, const std::string& dash) {
        Series s = pooled_series(p, gi, id, time_axis, band);
        s.width = width, s.opacity = opacity, s.dots = dots, s.dash = dash;
        return thinned(std::move(s), kMaxPoints);
      };
      bands.push_back(series(train, "train_loss", false, true, 0, 0.12, false, ""));
      bands.push_back(series(val, "val_loss", false, true, 0, 0.22, false, ""));
      bands_t.push_back(series(train, "train_loss_time", true, true, 0, 0.12, false, ""));
      bands_t.push_back(series(val, "val_loss_time", true, true, 0, 0.22, false, ""));
      lines.push_back(series(train, "train_loss", false, false, 1.0, 0.6, false, ""));
      lines.push_back(series(val, "val_loss", false, false, 2.5, 1.0, true, ""));
      lines_t.push_back(series(train, "train_loss_time", true, false, 1.0, 0.6, false, ""));
      lines_t.push_back(series(val, "val_loss_time", true, false, 2.5, 1.0, true, ""));
      const std::string dash = kDash[g % 4];
      lr.series.push_back(series(l, "lr", false, false, 2.0, 1.0, false, dash));
      win.series.push_back(series(w, "window", false, false, 2.0, 1.0, false, dash));
      mom.series.push_back(series(mu, "momentum", false, false, 2.0, 1.0, false, dash));
    }
    loss.series = bands;
    loss.series.insert(loss.series.end(), lines.begin(), lines.end());
    loss_t.series = bands_t;
    loss_t.series.insert(loss_t.series.end(), lines_t.begin(), lines_t.end());
  }

  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>" + escape(o.title) + "</title>\n<style>\n"
       "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
       "margin:24px;color:#222;background:#fff}\n"
       "h1{font-size:20px;margin:0 0 12px}\n"
       "table{border-collapse:collapse;font-size:13px;margin:0 0 14px}\n"
       "th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}\n"
       "th:first-child,td:first-child{text-align:left}\n"
       ".sw{display:inline-block;width:14px;height:4px;margin:0 6px 3px 0;vertical-align:middle}\n"
       ".key{font-size:12px;color:#555;margin:0 0 10px}\n"
       ".charts{display:flex;flex-wrap:wrap;gap:8px}\n"
       ".chart{background:#fff;border:1px solid #e4e4e4}\n"
       ".chart .title{font-size:14px;font-weight:600}\n"
       ".chart .grid line{stroke:#ececec}\n"
       ".chart .frame{fill:none;stroke:#999}\n"
       ".chart text{font-size:11px;fill:#444}\n"
       ".chart .xt,.chart .xl{text-anchor:middle}\n"
       ".chart .yt{text-anchor:end}\n"
       ".chart .yl{text-anchor:middle}\n"
       ".chart .empty{text-anchor:middle;fill:#999}\n"
       ".chart .target{stroke:#444;stroke-width:1.2;stroke-dasharray:6 4}\n"
       ".chart .tl{text-anchor:end}\n"
       "</style>\n</head>\n<body>\n";
  h += "<h1>" + escape(o.title) + "</h1>\n";
  if (o.summary) {
    const auto cells = summary_cells(*o.summary);
    h += "<table class=\"summary\">\n<tr>";
    for (const auto& c : cells[0]) h += "<th>" + escape(c) + "</th>";
    h += "</tr>\n";
    for (size_t i = 1; i < cells.size(); ++i) {
      h += "<tr>";
      for (size_t c = 0; c < cells[i].size(); ++c) {
        std::string sw;
        if (c == 0) {
          const auto it = std::find(groups.begin(), groups.end(), cells[i][0]);
          if (it != groups.end()) sw = swatch(int(it - groups.begin()));
        }
        h += "<td>" + sw + escape(cells[i][c]) + "</td>";
      }
      h += "</tr>\n";
    }
    h += "</table>\n<p class=\"key\">" + escape(summary_note(*o.summary)) + "</p>\n";
  }
  h += "<table class=\"runs\">\n<tr><th>run</th><th>train steps</th><th>last train loss</th>"
       "<th>last val loss (step)</th><th>best val loss</th><th>training time</th>"
       "<th>ms/step</th><th>speedrun commit</th><th>device</th></tr>\n";
  for (size_t r = 0; r < runs.size(); ++r) {
    const auto& m = runs[r].metrics;
    std::string last_train = "-", last_val = "-", best_val = "-";
    if (!m.train.empty()) last_train = fmt::format("{:.4f}", m.train.back().loss);
    if (!m.val.empty()) {
      last_val = fmt::format("{:.4f} ({})", m.val.back().loss, m.val.back().step);
      double b = INFINITY;
      for (const auto& v : m.val) b = std::min(b, v.loss);
      best_val = fmt::format("{:.4f}", b);
    }
    const double total = cum[r].empty() ? 0 : cum[r].back();
    h += fmt::format(
        "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1f} s</td>"
        "<td>{}</td><td>{}</td><td>{}</td></tr>\n",
        swatch(color[r]), escape(runs[r].name), m.train.size(), last_train, last_val, best_val,
        total / 1e3,
        m.train.empty() ? std::string("-") : fmt::format("{:.1f}", total / double(m.train.size())),
        runs[r].built_by.empty() ? std::string("-") : escape(runs[r].built_by),
        runs[r].ran_on.empty() ? std::string("-") : escape(runs[r].ran_on));
  }
  h += "</table>\n<p class=\"key\">Loss charts: thin line = training loss of each step, thick "
       "line with dots = validation loss";
  if (grouped)
    h += "; each variant is the mean over its runs at each step, the shaded band spans their "
         "minimum to maximum";
  if (o.target_loss) h += fmt::format("; dashed line = target loss {:g}", *o.target_loss);
  if (o.loss_max) h += fmt::format("; loss axes cut at {:g} (higher values leave the chart)", *o.loss_max);
  h += ". Training time excludes validation.</p>\n";
  h += "<div class=\"charts\">\n";
  int id = 0;
  for (const Chart* c : {&loss, &loss_t, &lr, &win, &mom}) h += render_chart(*c, id++);
  h += "</div>\n</body>\n</html>\n";
  return h;
}

namespace {
// Its launches' commits and devices, each list joined by "; " (a device names itself with commas).
void add_launches(ReportRun& run, const std::string& dir) {
  const RunLaunches l = run_launches(dir);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : "; ") + x;
    return s;
  };
  run.built_by = join(l.commits);
  run.ran_on = join(l.devices);
}
}  // namespace

std::vector<ReportRun> load_report_runs(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  check(!paths.empty(), "report: give at least one run directory");
  std::vector<ReportRun> runs;
  std::vector<fs::path> dirs;
  for (const auto& p : paths) {
    fs::path file = p;
    if (fs::is_directory(file)) {
      file /= "metrics.jsonl";
      check(fs::exists(file), "report: ", p, " has no metrics.jsonl: pass a run's --out directory");
    } else {
      check(fs::exists(file), "report: ", p, ": no such file or directory");
    }
    runs.push_back({"", read_metrics(file.string()), "", "", ""});
    dirs.push_back(fs::absolute(file).lexically_normal().parent_path());
  }
  // Names: the directory's name; its parent's too when two runs share it.
  std::map<std::string, int> count;
  for (const auto& d : dirs) ++count[d.filename().string()];
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string n = dirs[i].filename().string();
    runs[i].name = count[n] > 1 ? (dirs[i].parent_path().filename() / n).string() : n;
    add_launches(runs[i], dirs[i].string());
  }
  return runs;
}

namespace {

// The path without a trailing slash, absolute: "runs/x/" -> "/cwd/runs/x".
std::filesystem::path clean_dir(const std::filesystem::path& p) {
  auto a = std::filesystem::absolute(p).lexically_normal();
  return a.filename().empty() ? a.parent_path() : a;
}

}  // namespace

ReportInputs load_report_inputs(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  check(!paths.empty(), "report: give at least one run or sweep directory");
  ReportInputs in;
  std::vector<std::string> plain;
  int sweeps = 0;
  for (const auto& p : paths) {
    if (fs::is_directory(p) && is_sweep_dir(p)) ++sweeps;
    else plain.push_back(p);
  }
  const std::vector<ReportRun> plain_runs = plain.empty() ? std::vector<ReportRun>{} : load_report_runs(plain);
  static const std::regex seed_dir("seed([0-9]+)");
  size_t k = 0;
  for (const auto& p : paths) {
    if (fs::is_directory(p) && is_sweep_dir(p)) {
      in.grouped = true;
      SweepDirRuns d = load_sweep_dir(p);
      if (!in.target_loss) in.target_loss = d.target_loss;
      // Two sweeps may both have a "baseline": their variants are told apart by the sweep.
      const std::string prefix = sweeps > 1 ? clean_dir(p).filename().string() + "/" : "";
      for (SweepRun& r : d.runs) {
        r.variant = prefix + r.variant;
        if (!r.metrics.train.empty() || !r.metrics.val.empty()) {
          in.runs.push_back({fmt::format("{}/seed{}", r.variant, r.seed), r.metrics, r.variant, "", ""});
          add_launches(in.runs.back(), r.dir);
        }
        in.records.push_back(std::move(r));
      }
      continue;
    }
    ReportRun run = plain_runs[k++];
    const fs::path dir = clean_dir(fs::is_directory(p) ? fs::path(p) : fs::path(p).parent_path());
    std::smatch m;
    const std::string leaf = dir.filename().string();
    std::string variant = run.name;
    uint64_t seed = 0;
    // A sweep's OUT/<variant>/seed<k> (k a uint64; "seed" and more digits is a plain run).
    if (std::regex_match(leaf, m, seed_dir) &&
        std::from_chars(leaf.data() + 4, leaf.data() + leaf.size(), seed).ec == std::errc()) {
      variant = run.group = dir.parent_path().filename().string();
      in.grouped = true;
    }
    SweepRun rec = load_sweep_run(dir.string(), variant, seed);
    rec.metrics = run.metrics;
    in.records.push_back(std::move(rec));
    in.runs.push_back(std::move(run));
  }
  if (in.grouped)
    for (auto& r : in.runs)
      if (r.group.empty()) r.group = r.name;
  return in;
}

}  // namespace speedrun
