// The run's scalar logs: metrics.jsonl (one JSON object per line: {"step", "split", <name>: value})
// and TensorBoard events under tb/ (tags "<split>/<name>"). Rank 0 only. On resume from step k,
// lines after step k (written by the interrupted run after its last checkpoint) are dropped, so the
// log of a resumed run reads like the log of an unbroken one.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace kiln {
struct Recipe;
}

namespace kiln::train {

// Metrics as a JSON object, for metrics.jsonl, results.json and `kiln eval`: JSON has no NaN, so a
// value that is not finite (the AUC of a single class) is null.
nlohmann::json metrics_json(const std::map<std::string, double>& metrics);
// Metrics as a Markdown table for people (results.md of a run and of `kiln eval --out`).
std::string metrics_table(const std::map<std::string, double>& metrics);

// Where a run's figures come from, for results.json (and `kiln report`): recipe name, file and
// fingerprint, the commit kiln was built from, ranks, model folder name, seed.
nlohmann::json run_provenance(const Recipe& r, int ranks);

class EventWriter;

class RunLog {
 public:
  RunLog(const std::string& run_dir, int64_t resume_step, bool tensorboard);
  ~RunLog();
  void write(int64_t step, const std::string& split, const std::map<std::string, double>& values);
  void flush();

 private:
  std::ofstream jsonl_;
  std::string path_;
  std::unique_ptr<EventWriter> tb_;
};

}  // namespace kiln::train
