// The recipe parser and the common sections' reader, on a YAML file (extends: resolved relative to
// it, so a parent the input names may or may not exist).
#include "core/config.h"
#include "fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string path = kiln::fuzz::write_input("recipe.yaml", data, size);
  return kiln::fuzz::expect_clean([&] {
    kiln::Recipe r = kiln::read_recipe(path, {});
    kiln::recipe::to_yaml(r.tree);
  });
}
