// Line charts as standalone SVG files: several series on shared axes, with ticks, labels and a
// legend. No plotting runtime is needed to look at them (a browser or Markdown viewer shows SVG).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace kiln::train {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in order
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
};

// The chart as an SVG document, width x (height + a 16-pixel legend line per series). Series without points are listed in the
// legend as "(no data)"; a chart with no points at all draws empty axes.
std::string render_svg(const Chart& c, int width = 640, int height = 360);

// Round tick positions covering [lo, hi]: about `n` of them at 1, 2 or 5 times a power of ten.
std::vector<double> nice_ticks(double lo, double hi, int n);

}  // namespace kiln::train
