// `kiln report`: a paper's table filled from run directories (docs/report.md). A recipes folder
// declares its table in table.yaml: rows, columns, and per cell the recipe that fills it, the
// metric (and phase), and the paper's number with its source. The report gathers the runs of each
// cell (the recipe's own run directory, and run directories given on the command line, matched by
// recipe name), and writes report.md: kiln's value (mean and spread over several runs), the paper's,
// the difference, where every figure came from (recipe, commit, ranks, model, steps, tokens, wall
// time, seed), runs of an edited recipe flagged, missing cells marked missing, and SVG curves of
// training loss and of the metric against steps and tokens.
#pragma once
#include <string>
#include <vector>

namespace kiln::train {

struct ReportSummary {
  std::string path;  // report.md
  int tables = 0, cells = 0, filled = 0, missing = 0, flagged_runs = 0, runs = 0;
};

// inputs: recipes folders (holding table.yaml) and run directories (holding results.json); a run
// directory alone brings the table of the folder its recipe came from. Writes out_dir/report.md
// and out_dir/curves/*.svg; refuses (InputError) an out_dir whose report.md kiln report did not
// write. InputError naming the file for a bad table or input.
ReportSummary write_report(const std::vector<std::string>& inputs, const std::string& out_dir);

}  // namespace kiln::train
