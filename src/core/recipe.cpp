#include "core/recipe.h"

#include "core/hash.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"

namespace fs = std::filesystem;

namespace kiln::recipe {

const Node* Node::find(const std::string& key) const {
  for (auto& kv : map)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Node* Node::find(const std::string& key) {
  for (auto& kv : map)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

std::string Node::where() const {
  if (file.empty()) return "<recipe>";
  return line > 0 ? fmt::format("{}:{}", file, line) : file;
}

namespace {

Node convert(const YAML::Node& y, const std::string& file) {
  Node n;
  n.file = file;
  n.line = y.Mark().line >= 0 ? y.Mark().line + 1 : 0;
  switch (y.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      n.kind = Node::Kind::Null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::Scalar;
      n.scalar = y.Scalar();
      // yaml-cpp tags quoted (non-plain) scalars "!": `"5"` stays a string, `5` may be a number.
      n.quoted = y.Tag() == "!";
      break;
    case YAML::NodeType::Sequence:
      n.kind = Node::Kind::List;
      for (const auto& item : y) n.list.push_back(convert(item, file));
      break;
    case YAML::NodeType::Map:
      n.kind = Node::Kind::Map;
      for (const auto& kv : y) {
        auto key = kv.first.Scalar();
        if (n.find(key))
          input_error("{}:{}: key `{}` appears twice", file, kv.first.Mark().line + 1, key);
        n.map.emplace_back(key, convert(kv.second, file));
        // A key's own line is more useful than its value's for a block mapping value.
        n.map.back().second.line = kv.first.Mark().line + 1;
      }
      break;
  }
  return n;
}

Node parse_yaml(const std::string& text, const std::string& name) {
  try {
    auto y = YAML::Load(text);
    Node n = convert(y, name);
    if (n.kind == Node::Kind::Null) {
      n.kind = Node::Kind::Map;  // an empty file is an empty recipe
    }
    if (n.kind != Node::Kind::Map)
      input_error("{}:{}: a recipe must be a mapping of sections (model:, data:, train:, ...)", name, n.line);
    return n;
  } catch (const YAML::ParserException& e) {
    input_error("{}:{}:{}: YAML syntax error: {}", name, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
}

std::string read_file(const std::string& path, const std::string& referrer) {
  // A path the file system refuses outright (too long, a loop of links) is named, not thrown at.
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
    input_error("{}`{}`: {}", referrer.empty() ? "recipe file " : referrer + ": extends ", shorten(path, 200), ec.message());
  // An ifstream opens a directory and reads nothing from it: the recipe would look empty.
  if (is_dir)
    input_error("{}`{}` is a directory, not a recipe file (give one of its .yaml files)",
                referrer.empty() ? "" : referrer + ": extends ", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path, ec)) {
      if (referrer.empty()) input_error("recipe file `{}` not found", path);
      input_error("{}: extends `{}`, which was not found", referrer, path);
    }
    input_error("recipe file `{}` cannot be read", path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Node load_with_extends(const std::string& path, const std::string& referrer,
                       std::vector<std::string>& chain) {
  std::error_code ec;
  std::string canonical = fs::weakly_canonical(fs::absolute(path, ec), ec).string();
  if (ec)
    input_error("{}`{}`: {}", referrer.empty() ? "recipe file " : referrer + ": extends ", shorten(path, 200), ec.message());
  for (auto& c : chain)
    if (c == canonical) input_error("{}: `extends` cycle through `{}`", referrer, path);
  chain.push_back(canonical);
  Node self = parse_yaml(read_file(path, referrer), path);

  Node result;
  result.kind = Node::Kind::Map;
  result.file = path;
  if (auto* ext = self.find("extends")) {
    std::vector<const Node*> parents;
    if (ext->kind == Node::Kind::Scalar) {
      parents.push_back(ext);
    } else if (ext->kind == Node::Kind::List) {
      for (auto& p : ext->list) {
        if (p.kind != Node::Kind::Scalar) input_error("{}: `extends` entries must be file paths", p.where());
        parents.push_back(&p);
      }
    } else {
      input_error("{}: `extends` must be a file path or a list of them", ext->where());
    }
    for (auto* p : parents) {
      fs::path parent = p->scalar;
      if (parent.is_relative()) parent = fs::path(path).parent_path() / parent;
      merge(result, load_with_extends(parent.string(), p->where(), chain));
    }
    self.map.remove_if([](const auto& kv) { return kv.first == "extends"; });
  }
  merge(result, self);
  chain.pop_back();
  return result;
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// "did you mean" among candidates, or empty when nothing is close enough to be a typo.
std::string nearest(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (auto& c : candidates) {
    size_t d = edit_distance(key, c);
    if (d < best_d) best_d = d, best = c;
  }
  size_t limit = std::max<size_t>(2, key.size() / 3);
  return best_d <= limit ? best : "";
}

std::string expand_env(const std::string& s, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '$' && i + 1 < s.size() && s[i + 1] == '{') {
      size_t end = s.find('}', i);
      if (end == std::string::npos) input_error("{}: unterminated `${{` in `{}`", where, s);
      std::string inner = s.substr(i + 2, end - i - 2), def;
      bool has_def = false;
      if (auto p = inner.find(":-"); p != std::string::npos) {
        def = inner.substr(p + 2);
        inner = inner.substr(0, p);
        has_def = true;
      }
      const char* v = std::getenv(inner.c_str());
      if (v && *v) out += v;
      else if (has_def) out += def;
      else input_error("{}: environment variable `{}` is not set (in `{}`); set it or write ${{{}:-default}}",
                       where, inner, s, inner);
      i = end + 1;
    } else {
      out += s[i++];
    }
  }
  return out;
}

void emit(YAML::Emitter& e, const Node& n) {
  switch (n.kind) {
    case Node::Kind::Null:
      e << YAML::Null;
      break;
    case Node::Kind::Scalar:
      if (n.quoted) e << YAML::DoubleQuoted << n.scalar;
      else e << n.scalar;
      break;
    case Node::Kind::List:
      e << YAML::Flow << YAML::BeginSeq;
      for (auto& x : n.list) emit(e, x);
      e << YAML::EndSeq;
      break;
    case Node::Kind::Map:
      e << YAML::BeginMap;
      for (auto& kv : n.map) {
        e << YAML::Key << kv.first << YAML::Value;
        emit(e, kv.second);
      }
      e << YAML::EndMap;
      break;
  }
}

}  // namespace

void merge(Node& base, const Node& over) {
  if (base.kind != Node::Kind::Map || over.kind != Node::Kind::Map) {
    base = over;
    return;
  }
  for (auto& kv : over.map) {
    if (auto* b = base.find(kv.first)) merge(*b, kv.second);
    else base.map.push_back(kv);
  }
}

Node parse_string(const std::string& yaml, const std::string& name) { return parse_yaml(yaml, name); }

Node load(const std::string& path, const std::vector<std::string>& overrides) {
  std::vector<std::string> chain;
  Node root = load_with_extends(path, "", chain);
  for (size_t i = 0; i < overrides.size(); ++i)
    apply_override(root, overrides[i], fmt::format("command line argument `{}`", overrides[i]));
  return root;
}

void apply_override(Node& root, const std::string& assignment, const std::string& origin) {
  auto eq = assignment.find('=');
  auto bad = [&](const char* why) {
    input_error("bad override `{}`: {}; expected key=value with a dotted key, e.g. train.lr=2e-4",
                assignment, why);
  };
  if (eq == std::string::npos) bad("no `=`");
  std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  if (key.empty()) bad("empty key");
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    auto dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (auto& p : parts) {
    if (p.empty()) bad("empty key component");
    for (char c : p)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) bad("invalid character in key");
  }
  Node parsed;
  try {
    parsed = convert(YAML::Load(value), origin);
  } catch (const YAML::ParserException& e) {
    input_error("bad override `{}`: value is not valid YAML: {}", assignment, e.msg);
  }
  parsed.file = origin;
  parsed.line = 0;
  for (auto& x : parsed.list) x.file = origin, x.line = 0;
  if (parsed.kind == Node::Kind::Null && value.empty()) {
    // `key=` sets an empty string, which is what a user clearing a path means.
    parsed.kind = Node::Kind::Scalar;
    parsed.quoted = true;
  }
  Node* cur = &root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    Node* next = cur->find(parts[i]);
    if (!next) {
      cur->map.emplace_back(parts[i], Node{});
      next = &cur->map.back().second;
      next->kind = Node::Kind::Map;
      next->file = origin;
    } else if (next->kind != Node::Kind::Map) {
      input_error("bad override `{}`: `{}` is not a section ({})", assignment, parts[i], next->where());
    }
    cur = next;
  }
  if (Node* leaf = cur->find(parts.back())) *leaf = parsed;
  else cur->map.emplace_back(parts.back(), parsed);
}

std::string to_yaml(const Node& n) {
  YAML::Emitter e;
  emit(e, n);
  return std::string(e.c_str()) + "\n";
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// ---------------------------------------------------------------------------------------------
// Section

Section::Section(Node* node, std::string path) : node_(node), path_(std::move(path)) {}

Section Section::root(Node& n) { return Section(&n, ""); }

std::string Section::key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

std::string Section::where(const std::string& key) const {
  if (auto* n = node_->find(key)) return n->where();
  return node_->where();
}

void Section::fail(const std::string& key, const std::string& msg) const {
  input_error("{}: key `{}`: {}", where(key), key_path(key), msg);
}

bool Section::has(const std::string& key) const {
  auto* n = node_->find(key);
  return n && n->kind != Node::Kind::Null;
}

const Node* Section::need(const std::string& key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end()) known_.push_back(key);
  auto* n = node_->find(key);
  return (n && n->kind != Node::Kind::Null) ? n : nullptr;
}

const Node* Section::raw(const std::string& key) { return need(key); }
void Section::ignore(const std::string& key) { need(key); }

const Node& Section::scalar_or_throw(const Node* n, const std::string& key, const char* expected) const {
  if (n->kind != Node::Kind::Scalar)
    fail(key, fmt::format("expected {}, got a {}", expected, n->kind == Node::Kind::Map ? "section" : "list"));
  return *n;
}

template <typename T>
void Section::store_default(const std::string& key, const T& value) {
  Node d;
  d.file = "default";
  if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    d.kind = Node::Kind::List;
    for (auto& s : value) {
      Node x;
      x.kind = Node::Kind::Scalar;
      x.scalar = s;
      x.file = "default";
      d.list.push_back(x);
    }
  } else {
    d.kind = Node::Kind::Scalar;
    if constexpr (std::is_same_v<T, std::string>) {
      d.scalar = value;
      d.quoted = true;
    } else if constexpr (std::is_same_v<T, bool>) {
      d.scalar = value ? "true" : "false";
    } else {
      d.scalar = fmt::format("{}", value);
    }
  }
  if (auto* n = node_->find(key)) *n = d;  // a null value takes the default
  else node_->map.emplace_back(key, d);
}

std::string Section::get_string(const std::string& key, const std::string& def) {
  auto* n = need(key);
  if (!n) {
    store_default(key, def);
    return def;
  }
  return scalar_or_throw(n, key, "a string").scalar;
}

std::string Section::require_string(const std::string& key) {
  auto* n = need(key);
  if (!n || (n->kind == Node::Kind::Scalar && n->scalar.empty())) fail(key, "is required but missing");
  return scalar_or_throw(n, key, "a string").scalar;
}

std::string Section::get_choice(const std::string& key, const std::string& def,
                                const std::vector<std::string>& choices) {
  std::string v = get_string(key, def);
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::string hint = nearest(v, choices);
    fail(key, fmt::format("`{}` is not one of {}{}", v, join(choices),
                          hint.empty() ? "" : fmt::format(" (did you mean `{}`?)", hint)));
  }
  return v;
}

namespace {
bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  out = v;
  return true;
}
bool parse_double(const std::string& s, double& out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno || *end || !std::isfinite(v)) return false;
  out = v;
  return true;
}
}  // namespace

int64_t Section::get_int(const std::string& key, int64_t def, int64_t lo, int64_t hi) {
  auto* n = need(key);
  if (!n) {
    store_default(key, def);
    return def;
  }
  auto& s = scalar_or_throw(n, key, "an integer");
  int64_t v;
  if (s.quoted || !parse_int(s.scalar, v)) fail(key, fmt::format("expected an integer, got `{}`", s.scalar));
  if (v < lo || v > hi) fail(key, fmt::format("{} is out of range [{}, {}]", v, lo, hi));
  return v;
}

int64_t Section::require_int(const std::string& key, int64_t lo, int64_t hi) {
  if (!need(key)) fail(key, "is required but missing");
  return get_int(key, 0, lo, hi);
}

double Section::get_double(const std::string& key, double def, double lo, double hi) {
  auto* n = need(key);
  if (!n) {
    store_default(key, def);
    return def;
  }
  auto& s = scalar_or_throw(n, key, "a number");
  double v;
  if (s.quoted || !parse_double(s.scalar, v)) fail(key, fmt::format("expected a number, got `{}`", s.scalar));
  if (v < lo || v > hi) fail(key, fmt::format("{} is out of range [{}, {}]", v, lo, hi));
  return v;
}

double Section::require_double(const std::string& key, double lo, double hi) {
  if (!need(key)) fail(key, "is required but missing");
  return get_double(key, 0, lo, hi);
}

bool Section::get_bool(const std::string& key, bool def) {
  auto* n = need(key);
  if (!n) {
    store_default(key, def);
    return def;
  }
  auto& s = scalar_or_throw(n, key, "true or false");
  static const std::set<std::string> yes{"true", "True", "TRUE", "yes", "on"}, no{"false", "False", "FALSE", "no", "off"};
  if (!s.quoted && yes.count(s.scalar)) return true;
  if (!s.quoted && no.count(s.scalar)) return false;
  fail(key, fmt::format("expected true or false, got `{}`", s.scalar));
}

std::vector<std::string> Section::get_strings(const std::string& key, const std::vector<std::string>& def) {
  auto* n = need(key);
  if (!n) {
    store_default(key, def);
    return def;
  }
  if (n->kind == Node::Kind::Scalar) return {n->scalar};
  if (n->kind != Node::Kind::List) fail(key, "expected a list of strings, got a section");
  std::vector<std::string> out;
  for (auto& x : n->list) {
    if (x.kind != Node::Kind::Scalar) fail(key, "expected a list of strings, got a nested list or section");
    out.push_back(x.scalar);
  }
  return out;
}

std::string Section::get_path(const std::string& key, const std::string& def) {
  auto* n = need(key);
  if (!n) {
    store_default(key, def);
    return def;
  }
  auto& s = scalar_or_throw(n, key, "a path");
  std::string v = expand_env(s.scalar, fmt::format("{}: key `{}`", s.where(), key_path(key)));
  if (v.empty()) return v;
  fs::path p = v;
  if (p.is_relative()) {
    // Relative to the recipe that set it, so a recipe works from any working directory.
    bool from_file = !s.file.empty() && s.line > 0 && fs::exists(s.file);
    p = from_file ? fs::absolute(fs::path(s.file).parent_path() / p) : fs::absolute(p);
  }
  std::string abs = p.lexically_normal().string();
  if (auto* m = node_->find(key)) {
    m->scalar = abs;  // the saved recipe must reload from anywhere
    m->quoted = true;
  }
  return abs;
}

std::string Section::require_path(const std::string& key) {
  auto* n = need(key);
  if (!n || (n->kind == Node::Kind::Scalar && n->scalar.empty())) fail(key, "is required but missing");
  return get_path(key, "");
}

Section Section::sub(const std::string& key) {
  auto* n = need(key);
  if (!n) {
    Node empty;
    empty.kind = Node::Kind::Map;
    empty.file = node_->file;
    empty.line = node_->line;
    if (auto* existing = node_->find(key)) *existing = empty;
    else node_->map.emplace_back(key, empty);
    return Section(node_->find(key), key_path(key));
  }
  if (n->kind != Node::Kind::Map) fail(key, "expected a section (a mapping of keys)");
  return Section(node_->find(key), key_path(key));
}

void Section::finish() const {
  for (auto& kv : node_->map) {
    if (std::find(known_.begin(), known_.end(), kv.first) != known_.end()) continue;
    std::string hint = nearest(kv.first, known_);
    std::string msg = hint.empty()
                          ? fmt::format("unknown key `{}` (valid keys here: {})", key_path(kv.first), join(known_))
                          : fmt::format("unknown key `{}` (did you mean `{}`?)", key_path(kv.first), key_path(hint));
    input_error("{}: {}", kv.second.where(), msg);
  }
}

namespace {
void strip_paths(Node& n) {
  if (n.kind == Node::Kind::Scalar && !n.scalar.empty() && n.scalar[0] == '/')
    n.scalar = std::filesystem::path(n.scalar).filename().string();
  for (auto& [k, v] : n.map) strip_paths(v);
  for (auto& v : n.list) strip_paths(v);
}
}  // namespace

std::string fingerprint(const Node& tree) {
  Node t = tree;
  auto drop = [](Node& parent, const std::string& key) {
    parent.map.remove_if([&](const auto& kv) { return kv.first == key; });
  };
  for (const char* s : {"checkpoint", "log", "dist"}) drop(t, s);
  if (Node* d = t.find("data")) drop(*d, "store_dir");
  if (Node* tr = t.find("train"))
    for (const char* k : {"seed", "threads", "eval_batch", "memory_check"}) drop(*tr, k);
  strip_paths(t);
  const std::string y = to_yaml(t);
  return sha256_hex(y.data(), y.size());
}

}  // namespace kiln::recipe
