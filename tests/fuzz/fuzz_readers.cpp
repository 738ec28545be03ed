// The engine's data readers (data/readers.h). The first input byte chooses the reader and its
// options; the rest is the file. KILN_FUZZ_READERS picks the family a target covers, so each family
// gets its own fuzzing time: delimited (tsv, csv), conll, json (jsonl, conversation), text (sst, text).
#include <string>

#include "data/readers.h"
#include "fuzz/fuzz.h"

using namespace kiln::data;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  ReadOptions o;
  o.skip_bad = sel & 1;
  std::string format;
  const std::string family = KILN_FUZZ_READERS;
  if (family == "delimited") {
    format = (sel & 2) ? "csv" : "tsv";
    o.delimiter = format == "csv" ? ',' : '\t';
    o.quoting = sel & 4;
    o.header = sel & 8;
    if (!o.header) o.text_field = (sel & 16) ? "1" : "0";
    if (!o.header) o.label_field = (sel & 32) ? "" : "2";
    if (sel & 64) o.text_pair_field = o.header ? "question" : "1";
  } else if (family == "conll") {
    format = "conll";
    o.tag_scheme = (sel & 2) ? "keep" : "bio";
  } else if (family == "json") {
    format = (sel & 2) ? "conversation" : "jsonl";
    o.text_field = "text";
    if (sel & 4) o.label_field = "";
    if (sel & 8) o.text_pair_field = "pair";
  } else {
    format = (sel & 2) ? "text" : "sst";
    o.document_split = (sel & 4) ? "blank_line" : "line";
    o.skip_lines = (sel >> 3) & 3;
  }
  std::string path = kiln::fuzz::write_input("input." + format, data + 1, size - 1);
  return kiln::fuzz::expect_clean([&] {
    ReadStats st;
    auto records = read_records(format, path, o, &st);
    check_utf8(records, sel & 128);
  });
}
