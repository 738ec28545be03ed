// What a Task's evaluation produces on one rank: per-example columns named by the method
// (predictions, gold values, scores, tag sequences, texts), plus the summed loss. The trainer gathers
// the records of every rank (ordered by example index, so the result does not depend on the number
// of ranks) and hands the whole set to Task::metrics. Metrics are therefore always computed from all
// predictions, never by averaging per-rank scores.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln::parallel {
class Communicator;
}

namespace kiln::train {

struct EvalRecords {
  std::vector<int64_t> example;  // store index of each evaluated example: the gather sorts by it
  // Columns, each with one entry per example, under names the method chooses (ls_llama: ints
  // "pred"/"gold", reals "score", seqs "pred_tags"/"gold_tags").
  std::map<std::string, std::vector<int64_t>> ints;
  std::map<std::string, std::vector<double>> reals;
  std::map<std::string, std::vector<std::vector<int32_t>>> seqs;
  std::map<std::string, std::vector<std::string>> texts;
  std::map<std::string, std::vector<std::vector<double>>> vecs;  // e.g. a score per sentence of a bag
  // Summed over the evaluated targets (tokens or examples) of this rank; the gather adds them.
  double loss_sum = 0;
  int64_t loss_count = 0;

  int64_t size() const { return int64_t(example.size()); }
  // A column for reading; empty when the method recorded none under that name.
  const std::vector<int64_t>& ints_of(const std::string& name) const;
  const std::vector<double>& reals_of(const std::string& name) const;
  const std::vector<std::vector<int32_t>>& seqs_of(const std::string& name) const;
  const std::vector<std::string>& texts_of(const std::string& name) const;
  const std::vector<std::vector<double>>& vecs_of(const std::string& name) const;
  // Appends another rank's records (used by the gather; also handy in tests). Both must have the
  // same columns, or one of them none.
  void append(const EvalRecords& o);
  // Sorts every column by `example` (stable), so gathered order equals single-process order.
  // InternalError when a column's length differs from the number of examples.
  void sort_by_example();
  std::string serialize() const;
  static EvalRecords deserialize(const std::string& bytes);
};

// Every rank's records, concatenated and sorted by example index, on every rank. Collective.
EvalRecords gather_records(const EvalRecords& mine, parallel::Communicator& comm);

}  // namespace kiln::train
