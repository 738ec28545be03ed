// TensorBoard scalars without TensorFlow: an events file is a TFRecord stream of `Event` protocol
// buffers. Both are small, stable formats, written here by hand:
//   record  = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
//   Event   = 1: wall_time (double) | 2: step (int64) | 3: file_version (string) | 5: summary
//   Summary = repeated 1: Value;  Value = 1: tag (string) | 2: simple_value (float)
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace kiln::train {

uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
uint32_t masked_crc32c(const void* data, size_t n);

class EventWriter {
 public:
  // Creates <dir>/events.out.tfevents.<seconds>.<hostname>.<suffix> and writes the version event.
  explicit EventWriter(const std::string& dir, const std::string& suffix = "kiln");
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;
  void scalar(const std::string& tag, double value, int64_t step, double wall_time = -1);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void record(const std::string& data);
  std::string path_;
  FILE* f_ = nullptr;
};

// Reading back, for tests and `kiln` tooling: every record's CRCs are checked (InputError naming
// the file and offset on a mismatch).
struct ScalarEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string tag;
  float value = 0;
};
struct EventFile {
  std::string file_version;
  std::vector<ScalarEvent> scalars;
};
EventFile read_events(const std::string& path);

}  // namespace kiln::train
