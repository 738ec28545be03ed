#include "train/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace kiln::train {

namespace {

// Colours that stay apart for people with the common colour-vision deficiencies (Okabe-Ito).
const char* const kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"};

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string tick_label(double v, double step) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  // Large counts (tokens) with a suffix: 500k, 1.5M, 2G.
  for (auto [scale, suffix] : {std::pair<double, const char*>{1e9, "G"}, {1e6, "M"}, {1e3, "k"}})
    if (a >= scale && step >= scale / 10) return fmt::format("{:g}{}", v / scale, suffix);
  if (a < 1e-3) return fmt::format("{:.2g}", v);
  const int decimals = step >= 1 ? 0 : int(std::ceil(-std::log10(step) - 1e-9));
  return fmt::format("{:.{}f}", v, std::max(0, decimals));
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int n) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / std::max(1, n);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::floor(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return t;
}

std::string render_svg(const Chart& c, int width, int height) {
  const double left = 64, right = 16, top = 30, bottom = 44;
  const int legend_rows = int(c.series.size());
  const double plot_h = height - top - bottom;
  const int total_h = height + 16 * legend_rows;  // the legend below the axes, a line per series
  const double plot_w = width - left - right;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : c.series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  // One x (an evaluation at the last step only) or one y: centre it in a range around it.
  auto widen = [](double& lo, double& hi) {
    if (hi > lo) return;
    const double pad = std::max(1.0, std::fabs(lo) * 0.1);
    lo -= pad, hi += pad;
  };
  widen(x0, x1), widen(y0, y1);
  auto xt = nice_ticks(x0, x1, 6), yt = nice_ticks(y0, y1, 5);
  x0 = std::min(x0, xt.front()), x1 = std::max(x1, xt.back());
  y0 = std::min(y0, yt.front()), y1 = std::max(y1, yt.back());
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * plot_w; };
  auto Y = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * plot_h; };

  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, total_h);
  o += fmt::format("<text x=\"{}\" y=\"18\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n", left + plot_w / 2,
                   escape(c.title));
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  for (double v : yt) {
    o += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", left, Y(v),
                     left + plot_w, Y(v));
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", left - 6, Y(v) + 4,
                     tick_label(v, ystep));
  }
  for (double v : xt) {
    o += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", X(v), top,
                     X(v), top + plot_h);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", X(v), top + plot_h + 14,
                     tick_label(v, xstep));
  }
  o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" stroke=\"#606060\"/>\n", left,
                   top, plot_w, plot_h);
  o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", left + plot_w / 2,
                   top + plot_h + 30, escape(c.x_label));
  o += fmt::format("<text transform=\"translate(14 {:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   top + plot_h / 2, escape(c.y_label));
  for (size_t i = 0; i < c.series.size(); ++i) {
    const auto& s = c.series[i];
    const char* col = kColours[i % (sizeof(kColours) / sizeof(kColours[0]))];
    std::string pts;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) pts += fmt::format("{:.1f},{:.1f} ", X(x), Y(y));
    if (s.points.size() == 1)
      o += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n", X(s.points[0].first),
                       Y(s.points[0].second), col);
    else if (!pts.empty())
      o += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", col, pts);
    const double ly = top + plot_h + 46 + 16.0 * double(i);
    o += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"2\"/>\n", left,
                     ly - 4, left + 20, ly - 4, col);
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\">{}{}</text>\n", left + 26, ly, escape(s.name),
                     s.points.empty() ? " (no data)" : "");
  }
  return o + "</svg>\n";
}

}  // namespace kiln::train
