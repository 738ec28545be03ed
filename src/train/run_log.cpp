#include "train/run_log.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/build_info.h"
#include "core/config.h"
#include "core/error.h"
#include "core/files.h"
#include "train/tensorboard.h"

namespace kiln::train {

namespace fs = std::filesystem;

std::string metrics_table(const std::map<std::string, double>& metrics) {
  std::string out = "| metric | value |\n|---|---|\n";
  for (const auto& [k, v] : metrics) out += fmt::format("| {} | {:.4f} |\n", k, v);
  return out;
}

nlohmann::json run_provenance(const Recipe& r, int ranks) {
  nlohmann::json j;
  j["recipe"] = r.name;
  j["recipe_file"] = r.file.empty() ? std::string() : fs::absolute(r.file).string();
  j["recipe_sha256"] = r.fingerprint;
  j["commit"] = git_commit();
  j["ranks"] = ranks;
  j["model"] = fs::path(r.model.path).filename().string();
  j["seed"] = r.train.seed;
  return j;
}

RunLog::RunLog(const std::string& run_dir, int64_t resume_step, bool tensorboard) {
  fs::create_directories(run_dir);
  std::string path = run_dir + "/metrics.jsonl";
  if (fs::exists(path)) {
    std::ifstream in(path);
    std::stringstream kept;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("step")) continue;  // a line cut by a kill mid-write
      if (resume_step >= 0 && j["step"].get<int64_t>() > resume_step) continue;
      kept << line << '\n';
    }
    in.close();
    write_file_atomic(path, kept.str());
  }
  path_ = path;
  jsonl_.open(path, std::ios::app);
  if (!jsonl_) write_failed(path, errno);
  if (tensorboard) {
    fs::create_directories(run_dir + "/tb");
    // TensorBoard reads every events file in the folder and orders scalars by step, so a resumed
    // run simply adds a file.
    tb_ = std::make_unique<EventWriter>(run_dir + "/tb");
  }
}

RunLog::~RunLog() = default;

nlohmann::json metrics_json(const std::map<std::string, double>& metrics) {
  nlohmann::json j = nlohmann::json::object();
  for (auto& [k, v] : metrics) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  return j;
}

void RunLog::write(int64_t step, const std::string& split, const std::map<std::string, double>& values) {
  nlohmann::json j;
  j["step"] = step;
  j["split"] = split;
  j.update(metrics_json(values));
  if (tb_)
    for (auto& [k, v] : values) tb_->scalar(split + "/" + k, v, step);
  jsonl_ << j.dump() << '\n';
}

void RunLog::flush() {
  errno = 0;
  if (!jsonl_.flush()) write_failed(path_, errno ? errno : EIO);
  if (tb_) tb_->flush();
}

}  // namespace kiln::train
