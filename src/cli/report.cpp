// `kiln report <recipes folder | run directory>... [--out DIR]`: the tables the recipes folders
// declare (table.yaml), filled from the runs found, written to DIR/report.md with SVG curves
// (train/report.h, docs/report.md). Reads run directories only; needs no MPI peers.
#include "cli/verbs.h"
#include "core/log.h"
#include "train/report.h"

namespace kiln::cli {

namespace {
std::vector<std::string> g_inputs;
std::string g_out = "report";
}  // namespace

void add_report(CLI::App& app, Action& action) {
  auto* sub = app.add_subcommand("report", "Fill recipes folders' paper tables (table.yaml) from their runs: report.md with curves");
  sub->add_option("inputs", g_inputs, "Recipes folders (with table.yaml) and run directories")->required();
  sub->add_option("--out", g_out, "Output directory for report.md and curves/")->capture_default_str();
  sub->callback([&action] {
    action = [] {
      log::setup(0, 1, false, log::Level::info);
      auto s = train::write_report(g_inputs, g_out);
      log::info("report: {} ({} tables, {} of {} cells filled, {} missing; {} runs, {} of an edited recipe)", s.path,
                s.tables, s.filled, s.cells, s.missing, s.runs, s.flagged_runs);
      return 0;
    };
  });
}

}  // namespace kiln::cli
