// The checkpoint reader on a damaged or foreign HDF5 file: every failure must be "corrupt".
#include "fuzz/fuzz.h"
#include "train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string path = kiln::fuzz::write_input("step-00000001.h5", data, size);
  return kiln::fuzz::expect_clean([&] { kiln::train::read_checkpoint(path); });
}
