// `method: lep` — LEP step 3 (../shared/METHODS.md section 3): embedding-only continued
// pre-training of a model whose vocabulary was replaced (`kiln lep init`). The causal-LM loss of
// `method: lm` on text packed into data.max_len blocks (the paper: 1024); only the input embeddings
// and the LM head train, every decoder layer and the final norm stay frozen, and there is no LoRA.
// Document boundaries: each packed document starts with BOS, which is never a target, so no loss
// asks a document to predict the next one's start. Large E and H make the optimizer state the
// memory that matters: `dist.zero1: true` shards it over the ranks.
// Evaluation adds what compares across tokenizers (METHODS.md: never per token): bits per character
// and per byte of the held-out text (the summed loss in bits over its characters or UTF-8 bytes;
// the first token of each packed block has no context and is not scored, 1 in data.max_len), and
// its characters per token (the tokenizer's, without BOS/EOS).
#include <algorithm>
#include <cmath>
#include <iterator>

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "data/align.h"
#include "data/readers.h"
#include "data/tokenizer.h"
#include "methods/lm/lm_task.h"
#include "methods/registry.h"
#include "model/hf_io.h"

namespace kiln::methods {
namespace {

const char* const kTrained[] = {"model.embed_tokens.weight", "lm_head.weight"};

class LepTask : public LmTask {
 public:
  void build(Recipe& r, parallel::World& world, parallel::Communicator& comm) override {
    recipe::Section task = recipe::Section::root(r.tree).sub("task");
    task.finish();
    if (r.lora.enabled)
      input_error("{}: key `lora.enabled`: method lep trains the embeddings alone, without LoRA: set it to false",
                  r.file);
    if (!r.model.freeze.empty())
      input_error("{}: key `model.freeze`: method lep trains the embeddings and LM head and freezes the rest itself",
                  r.file);
    if (r.data.format != "text")
      input_error("{}: key `data.format`: method lep trains on plain text (format: text), not `{}`", r.file,
                  r.data.format);
    build_model_and_stores(r, world, comm);
    int64_t trained = 0, frozen = 0;
    for (auto& p : model_->named_parameters()) {
      const bool train = std::find(std::begin(kTrained), std::end(kTrained), p.key()) != std::end(kTrained);
      p.value().requires_grad_(train);
      (train ? trained : frozen) += p.value().numel();
    }
    if (model_->config().tie_word_embeddings)
      log::warn("{}: the model ties its embeddings and LM head, so they train as one matrix; `kiln lep init` writes "
                "them untied, as the paper trains them",
                r.model.path);
    const data::Tokenizer tok = model::load_tokenizer(r.model.path);
    bos_ = tok.bos_id();
    if (!r.data.eval.empty() && r.data.max_eval_examples == 0) {
      // The eval text as the store read it, one document per record.
      data::ReadOptions o = data::options_from(r.data);
      o.label_field.clear();
      for (const data::Record& rec : data::read_records(r.data.format, r.data.eval, o)) {
        eval_bytes_ += int64_t(rec.text.size());
        for (unsigned char c : rec.text) eval_chars_ += (c & 0xC0) != 0x80;
        eval_tokens_ += int64_t(tok.encode(rec.text, false, false).size());
      }
    }
    log::info("lep: training the embeddings and LM head ({} parameters); {} frozen", trained, frozen);
  }

  std::map<std::string, double> metrics(const train::EvalRecords& all) override {
    auto m = LmTask::metrics(all);
    if (eval_chars_ > 0 && all.loss_count > 0) {
      const double bits = all.loss_sum / std::log(2.0);
      m["bits_per_char"] = bits / double(eval_chars_);
      m["bits_per_byte"] = bits / double(eval_bytes_);
      m["chars_per_token"] = double(eval_chars_) / double(eval_tokens_);
    }
    return m;
  }

  void prepare(Split s, data::Batch& b) const override {
    LmTask::prepare(s, b);
    if (bos_ >= 0) b["labels"].masked_fill_(b["input_ids"].eq(bos_), int64_t(data::kIgnore));
    b.num_targets = b["labels"].ne(data::kIgnore).sum().item<int64_t>();
  }

 private:
  int32_t bos_ = -1;
  int64_t eval_chars_ = 0, eval_bytes_ = 0, eval_tokens_ = 0;  // of data.eval, when it is read whole
};

}  // namespace

KILN_REGISTER_TASK("lep", "LEP: embedding-only training (input embeddings and LM head) of a model with a new vocabulary",
                   LepTask);

}  // namespace kiln::methods
