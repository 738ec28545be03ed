#include "data/readers.h"

#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/config.h"
#include "core/error.h"
#include "data/align.h"

namespace kiln::data {
namespace {

using json = nlohmann::json;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) input_error("{}: cannot open the data file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Lines with their 1-based numbers; a trailing \r (CRLF files) is dropped.
template <typename F>
void for_each_line(const std::string& buf, F f) {
  size_t pos = 0;
  int64_t line = 0;
  while (pos < buf.size()) {
    size_t nl = buf.find('\n', pos);
    size_t end = nl == std::string::npos ? buf.size() : nl;
    std::string s = buf.substr(pos, end - pos);
    if (!s.empty() && s.back() == '\r') s.pop_back();
    f(++line, s);
    pos = end + 1;
  }
}

// A malformed record: an error naming file:line, or skipped and counted.
struct BadRecord {
  const ReadOptions& o;
  ReadStats* st;
  void operator()(const std::string& file, int64_t line, const std::string& what, const std::string& text) const {
    std::string msg = fmt::format("{}:{}: {}: `{}`", file, line, what, shorten(text));
    if (!o.skip_bad) throw InputError(msg + " (set data.on_bad_record: skip to skip such records)");
    if (st) {
      if (st->skipped == 0) st->first_skip = msg;
      ++st->skipped;
    }
  }
};

void finish(std::vector<Record>& out, ReadStats* st) {
  if (st) st->records += int64_t(out.size());
}

// A JSON value as a label: strings as they are, numbers and booleans as JSON writes them.
bool json_label(const json& v, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return true;
  }
  if (v.is_number_integer() || v.is_number_unsigned() || v.is_boolean() || v.is_number_float()) {
    *out = v.dump();
    return true;
  }
  return false;
}

// Looks up a dotted path ("meta.label") in a JSON object.
const json* json_path(const json& obj, const std::string& path) {
  const json* cur = &obj;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string key = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (!cur->is_object()) return nullptr;
    auto it = cur->find(key);
    if (it == cur->end()) return nullptr;
    cur = &*it;
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

}  // namespace

ReadOptions options_from(const DataConfig& c) {
  ReadOptions o;
  o.skip_bad = c.on_bad_record == "skip";
  o.header = c.header;
  o.text_field = c.text_field;
  o.text_pair_field = c.text_pair_field;
  o.label_field = c.label_field;
  o.quoting = c.format == "csv";
  o.delimiter = c.format == "csv" ? ',' : '\t';
  if (!c.delimiter.empty()) o.delimiter = c.delimiter == "\\t" ? '\t' : c.delimiter[0];
  o.tag_scheme = c.tag_scheme;
  o.document_split = c.document_split;
  o.skip_lines = c.skip_lines;
  return o;
}

// ---------------------------------------------------------------------------------------------- CoNLL

std::vector<Record> read_conll(const std::string& path, const ReadOptions& o, ReadStats* st) {
  std::string buf = slurp(path);
  BadRecord bad{o, st};
  std::vector<Record> out;
  Record cur;
  bool cur_bad = false;
  size_t ncols = 0;
  size_t text_col = is_index(o.text_field) ? size_t(std::stoul(o.text_field)) : 0;
  bool tag_last = !is_index(o.label_field);
  size_t tag_col = tag_last ? 0 : size_t(std::stoul(o.label_field));
  auto flush = [&] {
    if (!cur.words.empty() && !cur_bad) {
      if (o.tag_scheme == "bio") cur.tags = iob1_to_bio(cur.tags);
      out.push_back(std::move(cur));
    }
    cur = Record();
    cur_bad = false;
  };
  for_each_line(buf, [&](int64_t line, const std::string& raw) {
    std::string s = trim(raw);
    if (s.empty()) return flush();
    std::vector<std::string> cols;
    std::istringstream ss(s);
    for (std::string c; ss >> c;) cols.push_back(c);
    if (cols[0] == "-DOCSTART-") return flush();
    if (cur_bad) return;  // the rest of a sentence already skipped
    if (cur.words.empty()) {
      cur.file = path;
      cur.line = line;
    }
    if (ncols == 0) ncols = cols.size();
    size_t tc = tag_last ? cols.size() - 1 : tag_col;
    std::string what;
    if (cols.size() < 2)
      what = "a CoNLL line needs a token and a tag separated by white space";
    else if (cols.size() != ncols)
      what = fmt::format("{} columns where the file's first line has {}", cols.size(), ncols);
    else if (tc >= cols.size() || text_col >= cols.size())
      what = fmt::format("column {} asked for, the line has {}", std::max(tc, text_col), cols.size());
    else if (!valid_tag(cols[tc]))
      what = fmt::format("tag `{}` is not O, B-<type> or I-<type>", cols[tc]);
    if (!what.empty()) {
      bad(path, line, what, raw);
      cur_bad = true;  // skip mode: the whole sentence goes
      return;
    }
    cur.words.push_back(cols[text_col]);
    cur.tags.push_back(cols[tc]);
  });
  flush();
  finish(out, st);
  return out;
}

// ------------------------------------------------------------------------------------------ delimited

std::vector<std::string> split_delimited(const std::string& line, char delim, bool quoting) {
  std::vector<std::string> f;
  std::string cur;
  bool in_q = false, was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoting && in_q) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          cur += '"';
          ++i;
        } else {
          in_q = false;
        }
      } else {
        cur += c;
      }
    } else if (quoting && c == '"' && cur.empty() && !was_quoted) {
      in_q = was_quoted = true;
    } else if (c == delim) {
      f.push_back(std::move(cur));
      cur.clear();
      was_quoted = false;
    } else {
      cur += c;
    }
  }
  if (in_q) throw InputError("unterminated quoted field");
  f.push_back(std::move(cur));
  return f;
}

std::vector<Record> read_delimited(const std::string& path, const ReadOptions& o, ReadStats* st) {
  std::string buf = slurp(path);
  BadRecord bad{o, st};
  // Cut the buffer into rows: with quoting, a newline inside quotes belongs to the field.
  struct Row {
    int64_t line;
    std::string text;
  };
  std::vector<Row> rows;
  {
    int64_t line = 1, start_line = 1;
    size_t start = 0;
    bool in_q = false;
    for (size_t i = 0; i <= buf.size(); ++i) {
      char c = i < buf.size() ? buf[i] : '\n';
      if (o.quoting && c == '"') in_q = !in_q;
      if (c == '\n' && (!in_q || i == buf.size())) {
        std::string r = buf.substr(start, std::min(i, buf.size()) - start);
        if (!r.empty() && r.back() == '\r') r.pop_back();
        if (i < buf.size() || !r.empty()) rows.push_back({start_line, std::move(r)});
        start = i + 1;
        start_line = line + 1;
        in_q = false;
      }
      if (c == '\n' && i < buf.size()) ++line;
    }
  }
  size_t first = 0;
  while (first < rows.size() && trim(rows[first].text).empty()) ++first;
  if (first == rows.size()) input_error("{}: the file holds no rows", path);
  std::vector<std::string> names;
  size_t ncols = 0;
  if (o.header) {
    try {
      names = split_delimited(rows[first].text, o.delimiter, o.quoting);
    } catch (const InputError& e) {
      input_error("{}:{}: header: {}", path, rows[first].line, e.what());
    }
    for (auto& n : names) n = trim(n);
    ncols = names.size();
    ++first;
  }
  auto column = [&](const std::string& field, const char* key) -> int64_t {
    if (field.empty()) return -1;
    if (o.header) {
      for (size_t i = 0; i < names.size(); ++i)
        if (names[i] == field) return int64_t(i);
      if (is_index(field)) return std::stol(field);
      std::string list;
      for (auto& n : names) list += (list.empty() ? "" : ", ") + n;
      input_error("{}:{}: key `data.{}`: column `{}` is not in the header ({})", path, rows[first - 1].line, key,
                  field, list);
    }
    if (!is_index(field))
      input_error("{}: key `data.{}`: `{}` must be a 0-based column index, the file has no header (data.header: false)",
                  path, key, field);
    return std::stol(field);
  };
  int64_t tcol = column(o.text_field, "text_field");
  int64_t pcol = column(o.text_pair_field, "text_pair_field");
  int64_t lcol = column(o.label_field, "label_field");
  int64_t need = std::max({tcol, pcol, lcol}) + 1;
  std::vector<Record> out;
  for (size_t r = first; r < rows.size(); ++r) {
    const Row& row = rows[r];
    if (trim(row.text).empty()) continue;
    std::vector<std::string> f;
    try {
      f = split_delimited(row.text, o.delimiter, o.quoting);
    } catch (const InputError& e) {
      bad(path, row.line, e.what(), row.text);
      continue;
    }
    if (ncols == 0) ncols = f.size();
    if (f.size() != ncols) {
      bad(path, row.line, fmt::format("{} fields where {} expected", f.size(), ncols), row.text);
      continue;
    }
    if (int64_t(f.size()) < need) {
      bad(path, row.line, fmt::format("{} fields, column {} asked for", f.size(), need - 1), row.text);
      continue;
    }
    Record rec;
    rec.file = path;
    rec.line = row.line;
    rec.text = trim(f[size_t(tcol)]);
    if (pcol >= 0) rec.text_pair = trim(f[size_t(pcol)]);
    if (lcol >= 0) rec.label = trim(f[size_t(lcol)]);
    if (rec.text.empty()) {
      bad(path, row.line, "empty text field", row.text);
      continue;
    }
    if (lcol >= 0 && rec.label.empty()) {
      bad(path, row.line, "empty label field", row.text);
      continue;
    }
    out.push_back(std::move(rec));
  }
  finish(out, st);
  return out;
}

// ------------------------------------------------------------------------------------------------ SST

std::vector<Record> read_sst(const std::string& path, const ReadOptions& o, ReadStats* st) {
  std::string buf = slurp(path);
  BadRecord bad{o, st};
  std::vector<Record> out;
  for_each_line(buf, [&](int64_t line, const std::string& raw) {
    if (line <= o.skip_lines) return;
    std::string s = trim(raw);
    if (s.empty()) return;
    size_t sp = s.find_first_of(" \t");
    if (sp == std::string::npos) return bad(path, line, "an SST line is `<label> <sentence>`", raw);
    Record rec;
    rec.file = path;
    rec.line = line;
    rec.label = s.substr(0, sp);
    rec.text = trim(s.substr(sp + 1));
    out.push_back(std::move(rec));
  });
  finish(out, st);
  return out;
}

// ---------------------------------------------------------------------------------------------- JSONL

std::vector<Record> read_jsonl(const std::string& path, const ReadOptions& o, ReadStats* st) {
  std::string buf = slurp(path);
  BadRecord bad{o, st};
  std::vector<Record> out;
  for_each_line(buf, [&](int64_t line, const std::string& raw) {
    if (trim(raw).empty()) return;
    json j;
    try {
      j = json::parse(raw);
    } catch (const json::parse_error& e) {
      return bad(path, line, fmt::format("not JSON (at byte {})", e.byte), raw);
    } catch (const json::exception& e) {  // out_of_range: a number past double
      return bad(path, line, fmt::format("not JSON ({})", e.what()), raw);
    }
    if (!j.is_object()) return bad(path, line, "a JSONL line must be an object", raw);
    Record rec;
    rec.file = path;
    rec.line = line;
    const json* t = json_path(j, o.text_field);
    if (!t || !t->is_string())
      return bad(path, line, fmt::format("field `{}` (data.text_field) missing or not a string", o.text_field), raw);
    rec.text = t->get<std::string>();
    if (!o.text_pair_field.empty()) {
      const json* p = json_path(j, o.text_pair_field);
      if (!p || !p->is_string())
        return bad(path, line, fmt::format("field `{}` (data.text_pair_field) missing or not a string", o.text_pair_field),
                   raw);
      rec.text_pair = p->get<std::string>();
    }
    if (!o.label_field.empty()) {
      const json* l = json_path(j, o.label_field);
      if (!l || !json_label(*l, &rec.label))
        return bad(path, line,
                   fmt::format("field `{}` (data.label_field) missing or not a string, number or boolean", o.label_field),
                   raw);
    }
    out.push_back(std::move(rec));
  });
  finish(out, st);
  return out;
}

// ----------------------------------------------------------------------------------------------- text

std::vector<Record> read_text(const std::string& path, const ReadOptions& o, ReadStats* st) {
  std::string buf = slurp(path);
  std::vector<Record> out;
  Record cur;
  auto flush = [&] {
    if (!cur.text.empty()) out.push_back(std::move(cur));
    cur = Record();
  };
  for_each_line(buf, [&](int64_t line, const std::string& raw) {
    if (line <= o.skip_lines) return;
    bool blank = trim(raw).empty();
    if (o.document_split == "line") {
      if (blank) return;
      cur.file = path;
      cur.line = line;
      cur.text = raw;
      return flush();
    }
    if (blank) return flush();
    if (cur.text.empty()) {
      cur.file = path;
      cur.line = line;
    } else {
      cur.text += '\n';
    }
    cur.text += raw;
  });
  flush();
  finish(out, st);
  return out;
}

// --------------------------------------------------------------------------------------- conversation

std::vector<Record> read_conversations(const std::string& path, const ReadOptions& o, ReadStats* st) {
  std::string buf = slurp(path);
  BadRecord bad{o, st};
  std::vector<Record> out;
  size_t i = 0, counted = 0;
  int64_t line = 1;
  auto line_at = [&](size_t pos) {  // advances the running line count to `pos`
    for (; counted < pos && counted < buf.size(); ++counted)
      if (buf[counted] == '\n') ++line;
    return line;
  };
  auto skip_ws = [&] {
    while (i < buf.size() && std::isspace(static_cast<unsigned char>(buf[i]))) ++i;
  };
  skip_ws();
  bool array = i < buf.size() && buf[i] == '[';
  if (array) ++i;
  while (true) {
    skip_ws();
    if (i >= buf.size()) {
      if (array) input_error("{}:{}: the JSON list is not closed with `]`", path, line_at(i));
      break;
    }
    if (array && buf[i] == ']') break;
    size_t start = i;
    int64_t start_line = line_at(start);
    // Find the end of this value: brackets balanced outside strings.
    int depth = 0;
    bool in_str = false;
    for (; i < buf.size(); ++i) {
      char c = buf[i];
      if (in_str) {
        if (c == '\\') ++i;
        else if (c == '"') in_str = false;
        continue;
      }
      if (c == '"') in_str = true;
      else if (c == '{' || c == '[') ++depth;
      else if (c == '}' || c == ']') {
        if (--depth <= 0) {
          ++i;
          break;
        }
      } else if (depth == 0 && (c == ',' || std::isspace(static_cast<unsigned char>(c)))) {
        break;
      }
    }
    if (depth > 0 || in_str) input_error("{}:{}: a JSON value is not closed before the end of the file", path, start_line);
    if (i == start) ++i;  // a stray `,` or `]` where a value should start: one bad record, then go on
    std::string text = buf.substr(start, i - start);
    skip_ws();
    if (array) {
      if (i < buf.size() && buf[i] == ',') ++i;
      else if (i >= buf.size() || buf[i] != ']')
        input_error("{}:{}: expected `,` or `]` after a list element", path, line_at(i));
    }
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      int64_t l = start_line + std::count(text.begin(), text.begin() + std::min(text.size(), size_t(e.byte)), '\n');
      bad(path, l, "not JSON", text);
      continue;
    } catch (const json::exception& e) {
      bad(path, start_line, fmt::format("not JSON ({})", e.what()), text);
      continue;
    }
    const json* conv = j.is_object() ? json_path(j, "conversations") : nullptr;
    if (!conv || !conv->is_array() || conv->empty()) {
      bad(path, start_line, "a conversation is an object with a non-empty list `conversations`", text);
      continue;
    }
    Record rec;
    rec.file = path;
    rec.line = start_line;
    std::string what;
    for (size_t t = 0; t < conv->size() && what.empty(); ++t) {
      const json& turn = (*conv)[t];
      const json* from = turn.is_object() ? json_path(turn, "from") : nullptr;
      const json* value = turn.is_object() ? json_path(turn, "value") : nullptr;
      if (!from || !value || !from->is_string() || !value->is_string()) {
        what = fmt::format("turn {} needs string fields `from` and `value`", t);
        break;
      }
      std::string role = from->get<std::string>();
      if (role == "user") role = "human";
      if (role == "assistant") role = "gpt";
      const char* expect = t % 2 == 0 ? "human" : "gpt";
      if (role != expect) what = fmt::format("turn {} is from `{}`, expected `{}` (turns alternate human, gpt)", t, role, expect);
      rec.turns.push_back({role, value->get<std::string>()});
    }
    if (what.empty() && rec.turns.size() < 2) what = "a conversation needs a gpt turn after the human one";
    if (!what.empty()) {
      bad(path, start_line, what, text);
      continue;
    }
    out.push_back(std::move(rec));
  }
  finish(out, st);
  return out;
}

std::vector<Record> read_records(const std::string& format, const std::string& path, const ReadOptions& o,
                                 ReadStats* st) {
  if (format == "conll") return read_conll(path, o, st);
  if (format == "tsv" || format == "csv") return read_delimited(path, o, st);
  if (format == "sst") return read_sst(path, o, st);
  if (format == "jsonl") return read_jsonl(path, o, st);
  if (format == "text") return read_text(path, o, st);
  if (format == "conversation") return read_conversations(path, o, st);
  input_error("key `data.format`: unknown format `{}` (kiln reads conll, tsv, csv, sst, jsonl, text, conversation; a "
              "method may read more)",
              format);
}

namespace {
// Length of the well-formed UTF-8 sequence at s[i], 0 when ill-formed (Unicode Table 3-7).
size_t utf8_len(const std::string& s, size_t i) {
  auto b = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
  const unsigned c = b(i);
  if (c < 0x80) return 1;
  auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return b(k) >= lo && b(k) <= hi; };
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c == 0xE0) return cont(i + 1, 0xA0) && cont(i + 2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(i + 1) && cont(i + 2) ? 3 : 0;
  if (c == 0xED) return cont(i + 1, 0x80, 0x9F) && cont(i + 2) ? 3 : 0;
  if (c == 0xF0) return cont(i + 1, 0x90) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (c == 0xF4) return cont(i + 1, 0x80, 0x8F) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  return 0;
}
}  // namespace

size_t invalid_utf8_at(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string::npos;
}

std::vector<uint32_t> code_points(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = uint8_t(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    uint32_t v = n == 1 ? c : c & (0x7F >> n);
    for (size_t k = 1; k < n && i + k < s.size(); ++k) v = (v << 6) | (uint8_t(s[i + k]) & 0x3F);
    out.push_back(v);
    i += n;
  }
  return out;
}

std::string replace_invalid_utf8(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_len(s, i);
    if (n == 0) {
      o += "\xEF\xBF\xBD";
      ++i;
    } else {
      o.append(s, i, n);
      i += n;
    }
  }
  return o;
}

int64_t check_utf8(std::vector<Record>& records, bool replace) {
  int64_t changed = 0;
  for (auto& r : records) {
    auto one = [&](std::string& t, int64_t line) {
      const size_t at = invalid_utf8_at(t);
      if (at == std::string::npos) return;
      if (!replace)
        input_error("{}:{}: invalid UTF-8 (byte 0x{:02X} at byte {} of `{}`); fix the file, or set data.invalid_utf8: "
                    "replace",
                    r.file, line, static_cast<unsigned char>(t[at]), at, shorten(replace_invalid_utf8(t), 60));
      t = replace_invalid_utf8(t);
      ++changed;
    };
    one(r.text, r.line), one(r.text_pair, r.line), one(r.label, r.line);
    for (size_t i = 0; i < r.words.size(); ++i) one(r.words[i], r.line + int64_t(i));
    for (size_t i = 0; i < r.tags.size(); ++i) one(r.tags[i], r.line + int64_t(i));
    for (auto& t : r.turns) one(t.from, r.line), one(t.value, r.line);
  }
  return changed;
}

}  // namespace kiln::data
