// Checkpoint files: HDF5, one group per kind of state (weights, optimizer, rng, ...) holding tensors
// by name, plus string attributes (JSON metadata, the resolved recipe). A SHA-256 over every
// tensor's name, dtype, shape and bytes and every attribute is stored in the file and checked on
// load, so a flipped byte is an error, not a silently different model. Writes go to a temporary
// name, are flushed and fsynced, then renamed: a crash mid-write never leaves a file under the
// final name.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kiln::train {

using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

struct CheckpointFile {
  std::map<std::string, TensorList> groups;       // group -> tensors (any dtype, any shape, CPU)
  std::map<std::string, std::string> attrs;       // e.g. meta (JSON), recipe (YAML)

  const TensorList& group(const std::string& name) const;  // InputError naming the file if absent
  std::string sha256() const;                     // over the contents, in a canonical order
};

// Tensors are copied to CPU and made contiguous. Throws InternalError on I/O failure.
void write_checkpoint(const std::string& path, const CheckpointFile& c);
// Verifies the checksum. InputError (one line, naming the file) when the file is missing, truncated,
// not a checkpoint, or its contents do not match their checksum.
CheckpointFile read_checkpoint(const std::string& path);

// <run_dir>/checkpoints/step-<step, 8 digits>.h5
std::string checkpoint_name(int64_t step);
// Complete checkpoints in a directory (temporary files ignored), by step, oldest first.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir);
// Deletes all but the newest `keep` checkpoints (keep <= 0: delete none).
void prune_checkpoints(const std::string& dir, int64_t keep);

}  // namespace kiln::train
