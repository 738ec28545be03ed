#include "train/phases.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/config.h"
#include "core/log.h"
#include "parallel/communicator.h"
#include "parallel/world.h"
#include "core/error.h"
#include "core/files.h"
#include "train/run_log.h"
#include "train/signals.h"
#include "train/task.h"

namespace kiln::train {

namespace fs = std::filesystem;

std::vector<PhaseResult> fit_phases(const Recipe& recipe, Task& task, parallel::World& world,
                                    parallel::Communicator& comm) {
  std::vector<std::string> names = task.phases();
  const std::string run_dir = run_dir_of(recipe);
  const std::string& resume = recipe.checkpoint.resume;
  // One checkpoint file cannot resume every phase: each phase resumes from its own directory.
  if (resume != "auto" && resume != "none")
    input_error("key `checkpoint.resume`: method `{}` trains in phases ({}), each resuming from <run_dir>/<phase>; "
                "use auto or none, not `{}`",
                recipe.method, fmt::join(names, ", "), resume);
  StopSignals signals;  // a stop that arrives between two phases is not lost
  std::vector<PhaseResult> out;
  for (const std::string& name : names) {
    Recipe r = recipe;
    r.checkpoint.run_dir = (fs::path(run_dir) / name).string();
    recipe::apply_override(r.tree, "checkpoint.run_dir=" + r.checkpoint.run_dir, "phase " + name);
    log::info("phase {} ({} of {}): {}", name, out.size() + 1, names.size(), r.checkpoint.run_dir);
    auto t0 = std::chrono::steady_clock::now();
    task.begin_phase(name, comm);
    Trainer trainer(r, task, world, comm);
    PhaseResult p{name, r.checkpoint.run_dir, trainer.fit(), 0};
    p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out.push_back(p);
    if (p.fit.preempted) return out;
    at::Tensor stop = at::full({1}, StopSignals::requested() ? 1.0 : 0.0, at::TensorOptions().dtype(at::kDouble));
    comm.all_reduce(stop, parallel::ReduceOp::Sum, "stop between phases");
    if (stop.item<double>() > 0 && out.size() < names.size()) {
      log::warn("stop signal received after phase {}: its checkpoint is written; exiting (code {})", name,
                int(kExitPreempted));
      out.back().fit.preempted = true;
      return out;
    }
  }
  if (world.is_root()) {
    nlohmann::json j;
    j["method"] = recipe.method;
    j["main_metric"] = task.main_metric();
    j.update(run_provenance(recipe, world.size()));
    for (auto& p : out) {
      j["phases"][p.phase]["step"] = p.fit.step;
      if (!p.fit.eval.empty()) j["phases"][p.phase]["eval"] = metrics_json(p.fit.eval);
    }
    fs::create_directories(run_dir);
    write_file_atomic((fs::path(run_dir) / "results.json").string(), j.dump(2) + "\n");
    std::string table = phases_table(recipe, task.main_metric(), out, world.size());
    write_file_atomic((fs::path(run_dir) / "results.md").string(), table);
    log::info("results ({}):\n{}", (fs::path(run_dir) / "results.md").string(), table);
  }
  return out;
}

std::string phases_table(const Recipe& recipe, const std::string& main_metric, const std::vector<PhaseResult>& phases,
                         int ranks) {
  std::set<std::string> metrics;
  for (auto& p : phases)
    for (auto& [k, v] : p.fit.eval)
      if (k != main_metric) metrics.insert(k);
  std::string out = fmt::format("recipe {} ({}), model {}, eval data {}, {} rank(s)\n\n", recipe.name, recipe.method,
                                fs::path(recipe.model.path).filename().string(),
                                recipe.data.eval.empty() ? "-" : fs::path(recipe.data.eval).filename().string(), ranks);
  out += "| phase | steps | wall | " + main_metric;
  for (auto& m : metrics) out += " | " + m;
  out += " |\n|---|---|---|---";
  for (size_t i = 0; i < metrics.size(); ++i) out += "|---";
  out += "|\n";
  auto cell = [](const std::map<std::string, double>& e, const std::string& k) {
    auto it = e.find(k);
    return it == e.end() ? std::string("-") : fmt::format("{:.4f}", it->second);
  };
  for (auto& p : phases) {
    out += fmt::format("| {} | {}{} | {:.0f} s | {}", p.phase, p.fit.step, p.fit.already_complete ? " (done before)" : "",
                       p.seconds, cell(p.fit.eval, main_metric));
    for (auto& m : metrics) out += " | " + cell(p.fit.eval, m);
    out += " |\n";
  }
  return out;
}

}  // namespace kiln::train
