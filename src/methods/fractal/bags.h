// FRACTAL's data: bags. A bag is a context (a question or a problem), its sentences in order, one
// bag label, and optionally each sentence's gold label, which only evaluation (and the supervised
// ceiling) sees; training on bag labels never does. As data::Records: `text` the context, `words`
// the sentences, `tags` their gold labels ("1", "0", "" when unknown), `label` the bag label.
//
// Readers (data.format):
//   prm800k  PRM800K in the stepwise-critic layout (one JSON row per rated step; `responses` are the
//            steps before `next_response`; .jsonl or .jsonl.xz): one bag per solution path, i.e. per
//            row whose steps no other row continues; a step is good (1) unless rated -1; the bag
//            label is the MIN: good iff no step is rated -1. Human steps (rating null) count as good.
//   prm800k_raw  PRM800K as openai/prm800k releases it (phase{1,2}_{train,test}.jsonl: one labelled
//            solution per line, `question.problem`, `label.steps[].completions[]`), bagged as the
//            official FRACTAL code does (google-deepmind/fractal_acl25 math_reasoning/process_data.py):
//            one bag per solution of each step's FIRST completion, where it has text and a rating;
//            a solution without such a step gives no bag. A step is good (1) unless rated -1 (the
//            official code keeps the raw -1/0/1; see docs/fractal.md); the bag label is good iff no
//            kept step is rated -1.
//   wikiqa   headerless TSV `question \t sentence \t label`: one bag per run of rows with the same
//            question; sentence label = answers; the bag label is the MAX.
//   bags     JSON lines {"context", "sentences": [...], "label", "sentence_labels"?: [...]}.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/readers.h"
#include "data/schema.h"

namespace kiln::methods::fractal {

std::vector<data::Record> read_prm800k(const std::string& path, data::ReadStats* stats = nullptr);
// The bags of PRM800K rows given as JSON lines (read_prm800k's core; `where` names them in errors).
std::vector<data::Record> prm800k_bags(const std::vector<std::string>& lines, const std::string& where);
std::vector<data::Record> read_prm800k_raw(const std::string& path, data::ReadStats* stats = nullptr);
std::vector<data::Record> prm800k_raw_bags(const std::vector<std::string>& lines, const std::string& where);
std::vector<data::Record> read_wikiqa(const std::string& path, data::ReadStats* stats = nullptr);
std::vector<data::Record> read_bags(const std::string& path, data::ReadStats* stats = nullptr);

// Keeps the bags whose context falls in the held-out share (eval) or outside it (train), by a hash
// of the context, so that a problem's paths never sit on both sides.
std::vector<data::Record> hold_out(std::vector<data::Record> bags, double share, bool eval);

// The store (kind `bags`): input_ids = the context's tokens then each sentence's (each with its BOS,
// each cut to data.max_len); ragged `segments` (token count of each: the context first), ragged
// `sentence_labels` (1, 0, -1 unknown), `bag_label` per bag.
// `holdout` > 0: data.train and data.eval may be the same file; the eval split keeps that share of
// contexts, the train split the rest.
std::unique_ptr<data::Encoder> make_encoder(double holdout);

}  // namespace kiln::methods::fractal
