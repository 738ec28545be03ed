#include "train/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/config.h"
#include "core/error.h"
#include "core/recipe.h"
#include "train/svg.h"
#include "train/trainer.h"

namespace kiln::train {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kMarker = "<!-- written by kiln report; rewritten by each run of it -->";

struct Run {
  std::string dir;
  json results;
  std::string name, fingerprint;
};

// A run's curves for one cell: (step, tokens seen, loss) of its training lines, (step, value) of
// the cell's metric.
struct Curves {
  std::vector<std::array<double, 3>> train;
  std::vector<std::pair<double, double>> metric;
};

struct Cell {
  std::string row, column, recipe_file, metric, phase, source, where;
  std::optional<double> paper;
  std::string recipe_name, fingerprint, run_dir, recipe_error;
  std::vector<const Run*> runs;  // matched, in input order
};

struct Table {
  std::string file, title, note;
  double scale = 1;
  int digits = 4;
  std::vector<std::string> rows, columns;
  std::vector<Cell> cells;
};

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Table read_table(const std::string& path) {
  Table t;
  t.file = fs::absolute(path).string();
  recipe::Node root = recipe::load(path);
  recipe::Section s = recipe::Section::root(root);
  t.title = s.require_string("title");
  t.note = s.get_string("note", "");
  t.scale = s.get_double("scale", 1.0, 1e-12, 1e12);
  t.digits = int(s.get_int("digits", t.scale >= 10 ? 2 : 4, 0, 12));
  t.rows = s.get_strings("rows", {});
  t.columns = s.get_strings("columns", {});
  const std::string metric = s.get_string("metric", "");
  if (t.rows.empty()) input_error("{}: key `rows`: name the table's rows", s.where("rows"));
  if (t.columns.empty()) input_error("{}: key `columns`: name the table's columns", s.where("columns"));
  const recipe::Node* cells = s.raw("cells");
  if (!cells || cells->kind != recipe::Node::Kind::List || cells->list.empty())
    input_error("{}: key `cells`: expected a list of cells ({{row, column, recipe, paper, source}})", s.where("cells"));
  recipe::Node* list = root.find("cells");
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < list->list.size(); ++i) {
    recipe::Section c(&list->list[i], fmt::format("cells[{}]", i));
    Cell cell;
    cell.where = list->list[i].where();
    cell.row = c.require_string("row");
    cell.column = c.require_string("column");
    if (std::find(t.rows.begin(), t.rows.end(), cell.row) == t.rows.end())
      input_error("{}: key `cells[{}].row`: `{}` is not one of the rows", c.where("row"), i, cell.row);
    if (std::find(t.columns.begin(), t.columns.end(), cell.column) == t.columns.end())
      input_error("{}: key `cells[{}].column`: `{}` is not one of the columns", c.where("column"), i, cell.column);
    if (!seen.insert({cell.row, cell.column}).second)
      input_error("{}: two cells for row `{}`, column `{}`", cell.where, cell.row, cell.column);
    cell.recipe_file = c.require_path("recipe");
    cell.metric = c.get_string("metric", metric);
    if (cell.metric.empty()) input_error("{}: key `cells[{}].metric`: no metric (set it here or at the top)", cell.where, i);
    cell.phase = c.get_string("phase", "");
    if (c.has("paper")) cell.paper = c.require_double("paper", -1e300, 1e300);
    cell.source = c.get_string("source", "");
    c.finish();
    // The recipe as it is now: its name finds its runs, its fingerprint tells an edited recipe.
    try {
      Recipe r = read_recipe(cell.recipe_file, {});
      cell.recipe_name = r.name;
      cell.fingerprint = r.fingerprint;
      cell.run_dir = run_dir_of(r);
    } catch (const InputError& e) {
      cell.recipe_error = e.what();
      recipe::Node n = recipe::load(cell.recipe_file);
      const recipe::Node* name = n.find("name");
      cell.recipe_name = name && name->kind == recipe::Node::Kind::Scalar ? name->scalar
                                                                          : fs::path(cell.recipe_file).stem().string();
    }
    t.cells.push_back(std::move(cell));
  }
  s.finish();
  return t;
}

// A run directory: results.json (required) and metrics.jsonl (curves; optional).
std::optional<Run> read_run(const std::string& dir) {
  const fs::path rj = fs::path(dir) / "results.json";
  if (!fs::exists(rj)) return std::nullopt;
  Run run;
  run.dir = fs::absolute(dir).lexically_normal().string();
  run.results = json::parse(slurp(rj.string()), nullptr, false);
  if (run.results.is_discarded()) input_error("{}: not JSON", rj.string());
  run.name = run.results.value("recipe", "");
  run.fingerprint = run.results.value("recipe_sha256", "");
  if (run.name.empty()) {
    // A run from before results.json named its recipe: its resolved recipe.yaml says. Its
    // fingerprint stays unknown (the saved tree holds the method's defaults too).
    const fs::path ry = fs::path(dir) / "recipe.yaml";
    if (fs::exists(ry)) {
      recipe::Node n = recipe::load(ry.string());
      if (const recipe::Node* name = n.find("name"); name && name->kind == recipe::Node::Kind::Scalar) run.name = name->scalar;
    }
  }
  return run;
}

// The curves of `run` for a cell (a phase's own run directory for a method with phases).
Curves read_curves(const Run& run, const std::string& metric, const std::string& phase) {
  Curves out;
  const fs::path m = fs::path(run.dir) / phase / "metrics.jsonl";
  std::ifstream f(m);
  std::string line;
  while (std::getline(f, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step")) continue;
    const double step = j["step"].get<double>();
    if (j.value("split", "") == "train" && j.contains("loss") && j["loss"].is_number())
      out.train.push_back({step, j.contains("tokens_seen") ? j["tokens_seen"].get<double>() : NAN, j["loss"].get<double>()});
    else if (j.value("split", "") == "eval" && j.contains(metric) && j[metric].is_number())
      out.metric.emplace_back(step, j[metric].get<double>());
  }
  return out;
}

std::optional<double> value_of(const Run& run, const Cell& c) {
  const json* eval = nullptr;
  if (!c.phase.empty()) {
    const json& r = run.results;
    if (r.contains("phases") && r["phases"].contains(c.phase) && r["phases"][c.phase].contains("eval"))
      eval = &r["phases"][c.phase]["eval"];
  } else if (run.results.contains("eval")) {
    eval = &run.results["eval"];
  }
  if (!eval || !eval->contains(c.metric) || !(*eval)[c.metric].is_number()) return std::nullopt;
  return (*eval)[c.metric].get<double>();
}

std::string fmt_num(double v, int digits) { return fmt::format("{:.{}f}", v, digits); }

std::string human(double n) {
  if (n >= 1e9) return fmt::format("{:.2f} G", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f} M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f} k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string slug(const std::string& s) {
  std::string o;
  for (char ch : s) o += std::isalnum(static_cast<unsigned char>(ch)) ? char(std::tolower(static_cast<unsigned char>(ch))) : '-';
  return o;
}

// A path as a person reads it from where kiln report runs: relative when under the working
// directory, else absolute.
std::string rel(const std::string& path) {
  const fs::path p = fs::absolute(path).lexically_normal(), r = p.lexically_relative(fs::current_path());
  if (r.empty() || *r.begin() == "..") return p.string();
  return r.string();
}

}  // namespace

ReportSummary write_report(const std::vector<std::string>& inputs, const std::string& out_dir) {
  if (inputs.empty()) input_error("kiln report: give recipes folders (with table.yaml) or run directories");
  std::vector<std::string> table_files, run_dirs;
  for (const std::string& in : inputs) {
    if (fs::exists(fs::path(in) / "table.yaml")) table_files.push_back(fs::absolute(fs::path(in) / "table.yaml").string());
    else if (fs::exists(fs::path(in) / "results.json")) run_dirs.push_back(in);
    else if (fs::is_regular_file(in) && fs::path(in).filename() == "table.yaml") table_files.push_back(fs::absolute(in).string());
    else input_error("{}: neither a recipes folder with table.yaml nor a run directory with results.json", in);
  }
  // Explicit runs, then the table each run's recipe folder declares.
  std::vector<Run> runs;
  std::set<std::string> run_seen;
  for (const std::string& d : run_dirs) {
    auto r = read_run(d);
    const std::string rf = r->results.value("recipe_file", "");
    if (run_seen.insert(r->dir).second) runs.push_back(std::move(*r));
    const fs::path tf = fs::path(rf).parent_path() / "table.yaml";
    if (!rf.empty() && fs::exists(tf) &&
        std::find(table_files.begin(), table_files.end(), fs::absolute(tf).string()) == table_files.end())
      table_files.push_back(fs::absolute(tf).string());
  }
  if (table_files.empty())
    input_error("kiln report: no table: the runs' recipe folders hold no table.yaml (give the recipes folder)");
  std::vector<Table> tables;
  for (const auto& f : table_files) tables.push_back(read_table(f));
  // Each cell's own run directory joins the runs.
  for (const auto& t : tables)
    for (const auto& c : t.cells)
      if (!c.run_dir.empty())
        if (auto r = read_run(c.run_dir); r && run_seen.insert(r->dir).second) runs.push_back(std::move(*r));

  const fs::path out = fs::absolute(out_dir);
  const fs::path md_path = out / "report.md";
  if (fs::exists(md_path) && slurp(md_path.string()).rfind(kMarker, 0) != 0)
    input_error("{}: exists and was not written by kiln report; choose another --out", md_path.string());
  fs::create_directories(out / "curves");

  ReportSummary sum;
  sum.path = md_path.string();
  sum.tables = int(tables.size());
  std::string md = std::string(kMarker) + "\n# Report\n\n";
  md += "Each cell: kiln's value (the mean, with the sample standard deviation, over runs of the same recipe), "
        "the paper's, and the difference kiln - paper. Runs are matched to cells by recipe name; a run whose recipe "
        "fingerprint differs from the recipe as it is now is flagged and kept apart.\n\n";
  for (auto& t : tables) {
    for (auto& c : t.cells)
      for (const auto& r : runs)
        if (r.name == c.recipe_name && (c.phase.empty() || (r.results.contains("phases") && r.results["phases"].contains(c.phase))))
          c.runs.push_back(&r);
    md += fmt::format("## {}\n\n", t.title);
    if (!t.note.empty()) md += t.note + "\n\n";
    md += fmt::format("Table: {}.{}\n\n", rel(t.file),
                      t.scale == 1 ? "" : fmt::format(" kiln's metrics x {}, as the paper writes them.", fmt_num(t.scale, t.scale == std::floor(t.scale) ? 0 : 3)));
    md += "| |";
    for (const auto& col : t.columns) md += " " + col + " |";
    md += "\n|---|";
    for (size_t i = 0; i < t.columns.size(); ++i) md += "---|";
    md += "\n";
    std::string runs_md, sources_md;
    Chart by_step{t.title + ": training loss", "step", "loss", {}};
    Chart by_tokens{t.title + ": training loss", "tokens trained on", "loss", {}};
    std::map<std::string, Chart> by_metric;  // one chart per metric of the table
    for (const auto& row : t.rows) {
      md += "| " + row + " |";
      for (const auto& col : t.columns) {
        auto it = std::find_if(t.cells.begin(), t.cells.end(), [&](const Cell& c) { return c.row == row && c.column == col; });
        if (it == t.cells.end()) {
          md += " |";
          continue;
        }
        Cell& c = *it;
        ++sum.cells;
        Chart& mchart = by_metric[c.metric];
        if (mchart.title.empty()) mchart = {t.title + ": " + c.metric + " on the eval split", "step", c.metric, {}};
        std::vector<double> current, edited;
        for (const Run* r : c.runs) {
          auto v = value_of(*r, c);
          const bool flagged = !c.fingerprint.empty() && !r->fingerprint.empty() && r->fingerprint != c.fingerprint;
          sum.runs += 1;
          sum.flagged_runs += flagged ? 1 : 0;
          if (v) (flagged ? edited : current).push_back(*v * t.scale);
          const json& j = r->results;
          runs_md += fmt::format(
              "| {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", row, col, rel(r->dir),
              j.value("recipe", r->name), j.value("commit", std::string("-")), j.contains("ranks") ? j["ranks"].dump() : "-",
              j.value("model", std::string("-")), j.contains("step") ? j["step"].dump() : "-",
              j.contains("tokens_seen") ? human(j["tokens_seen"].get<double>()) : "-",
              j.contains("train_seconds") ? fmt::format("{:.0f} s", j["train_seconds"].get<double>()) : "-",
              j.contains("seed") ? j["seed"].dump() : "-", v ? fmt_num(*v * t.scale, t.digits) : "no value",
              flagged ? fmt::format("**recipe changed since this run** (run {}, recipe now {})", r->fingerprint.substr(0, 12),
                                    c.fingerprint.substr(0, 12))
              : r->fingerprint.empty() ? std::string("recipe fingerprint unknown (an older run)")
                                       : std::string());
          // Curves, one series per run.
          const Curves curves = read_curves(*r, c.metric, c.phase);
          std::string label = fmt::format("{} / {}{}{}", row, col, j.contains("seed") ? fmt::format(" (seed {})", j["seed"].dump()) : "",
                                          flagged ? " [older recipe]" : "");
          Series steps{label, {}}, tokens{label, {}}, metric{label, {}};
          for (const auto& p : curves.train) {
            steps.points.emplace_back(p[0], p[2]);
            if (std::isfinite(p[1])) tokens.points.emplace_back(p[1], p[2]);
          }
          for (const auto& [s, v2] : curves.metric) metric.points.emplace_back(s, v2 * t.scale);
          by_step.series.push_back(steps), by_tokens.series.push_back(tokens), mchart.series.push_back(metric);
        }
        const std::vector<double>& vals = current.empty() ? edited : current;
        std::string cell;
        if (vals.empty()) {
          ++sum.missing;
          cell = c.runs.empty() ? "missing" : "missing (runs without this metric)";
        } else {
          ++sum.filled;
          double mean = 0;
          for (double v : vals) mean += v;
          mean /= double(vals.size());
          cell = fmt_num(mean, t.digits);
          if (vals.size() > 1) {
            double ss = 0;
            for (double v : vals) ss += (v - mean) * (v - mean);
            cell += fmt::format(" ± {} (n={})", fmt_num(std::sqrt(ss / double(vals.size() - 1)), t.digits), vals.size());
          }
          if (current.empty()) cell += " (edited recipe)";
          if (c.paper) cell += fmt::format(" · paper {} · {}{}", fmt_num(*c.paper, t.digits), mean - *c.paper >= 0 ? "+" : "",
                                           fmt_num(mean - *c.paper, t.digits));
        }
        if (!c.paper && !vals.empty()) cell += " · no paper number";
        md += " " + cell + " |";
        sources_md += fmt::format("- {} / {}: recipe {}{}; metric `{}`{}; paper: {}\n", row, col, rel(c.recipe_file),
                                  c.recipe_error.empty() ? "" : " (not resolvable here: " + c.recipe_error + ")", c.metric,
                                  c.phase.empty() ? "" : " of phase `" + c.phase + "`",
                                  c.paper ? (c.source.empty() ? fmt_num(*c.paper, t.digits) : c.source) : "none");
        if (c.runs.empty() && !c.run_dir.empty())
          sources_md += fmt::format("  missing: no run in {}; `kiln train {}` makes one\n", rel(c.run_dir),
                                    rel(c.recipe_file));
      }
      md += "\n";
    }
    md += "\n### Cells\n\n" + sources_md;
    md += "\n### Runs\n\n";
    if (runs_md.empty()) {
      md += "No run of this table was found.\n";
    } else {
      md += "| cell | run directory | recipe | commit | ranks | model | steps | tokens | train time | seed | value | |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n" +
            runs_md;
    }
    if (!runs_md.empty()) {
      md += "\n### Curves\n\n";
      std::vector<std::pair<std::string, const Chart*>> charts = {{"loss-steps", &by_step}, {"loss-tokens", &by_tokens}};
      for (const auto& [metric, chart] : by_metric) charts.emplace_back(slug(metric) + "-steps", &chart);
      for (const auto& [name, chart] : charts) {
        const std::string file = fmt::format("curves/{}-{}.svg", slug(t.title).substr(0, 40), name);
        std::ofstream f(out / file);
        f << render_svg(*chart);
        if (!f) input_error("{}: cannot write ({})", (out / file).string(), std::strerror(errno));
        md += fmt::format("![{} against {}]({})\n\n", chart->y_label == "loss" ? "training loss" : chart->y_label,
                          chart->x_label, file);
      }
    }
    md += "\n";
  }
  std::ofstream f(md_path);
  f << md;
  if (!f) input_error("{}: cannot write ({})", md_path.string(), std::strerror(errno));
  return sum;
}

}  // namespace kiln::train
