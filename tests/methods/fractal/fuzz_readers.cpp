// FRACTAL's readers (bags.h); the first input byte chooses prm800k, wikiqa or bags.
#include "fuzz/fuzz.h"
#include "methods/fractal/bags.h"

namespace fr = kiln::methods::fractal;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 3;
  static const char* names[] = {"prm800k.jsonl", "wikiqa.tsv", "bags.jsonl"};
  std::string path = kiln::fuzz::write_input(names[which], data + 1, size - 1);
  return kiln::fuzz::expect_clean([&] {
    kiln::data::ReadStats st;
    if (which == 0) fr::read_prm800k(path, &st);
    if (which == 1) fr::read_wikiqa(path, &st);
    if (which == 2) fr::read_bags(path, &st);
  });
}
