// What a Task's evaluation produces on one rank: per-example predictions and gold values, plus the
// summed loss. The trainer gathers the records of every rank (ordered by example index, so the result
// does not depend on the number of ranks) and hands the whole set to Task::metrics. Metrics are
// therefore always computed from all predictions, never by averaging per-rank scores.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::train {

struct EvalRecords {
  // One entry per evaluated example, all vectors that are used having the same length.
  std::vector<int64_t> example;                      // store index: the gather sorts by it
  std::vector<int64_t> pred, gold;                   // classification: class ids
  std::vector<double> score;                         // binary classification: score of class 1 (AUC)
  std::vector<std::vector<int32_t>> pred_seq, gold_seq;  // token classification: tag ids per word
  std::vector<std::string> pred_text, gold_text;     // generative tasks
  // Summed over the evaluated targets (tokens or examples) of this rank; the gather adds them.
  double loss_sum = 0;
  int64_t loss_count = 0;

  int64_t size() const { return int64_t(example.size()); }
  // Appends another rank's records (used by the gather; also handy in tests).
  void append(const EvalRecords& o);
  // Sorts every per-example vector by `example` (stable), so gathered order equals single-process order.
  void sort_by_example();
  std::string serialize() const;
  static EvalRecords deserialize(const std::string& bytes);
};

}  // namespace kiln::train
