#include "train/task.h"

#include "core/error.h"

namespace kiln::train {

bool Task::decays(const std::string& name, const at::Tensor& p) const {
  if (p.dim() < 2) return false;
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  return !(has("norm") || has("bias"));
}

void Task::export_adapter(const std::string&) {
  input_error("this method cannot export a LoRA adapter (no adapters are trained)");
}

void Task::export_merged(const std::string&) { input_error("this method cannot export merged weights"); }

ExportUse Task::export_use(const ExportTarget&) const {
  return {"", false, "", "no transformers or peft class computes this method's outputs"};
}

int64_t Task::tokens(const data::Batch& batch) const {
  return batch.has("attention_mask") ? batch.at("attention_mask").sum().item<int64_t>() : 0;
}

}  // namespace kiln::train
