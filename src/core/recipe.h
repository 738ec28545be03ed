// Recipes: YAML files read into a tree that remembers, for every value, the file and line it came
// from (after `extends:` merging and command-line overrides), then read into typed structs through
// Section, which checks types, ranges and choices and, at finish(), rejects every key nobody read,
// suggesting the nearest valid one. All messages are one line: "<file>:<line>: key `a.b`: ...".
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::recipe {

struct Node {
  enum class Kind { Null, Scalar, Map, List };
  Kind kind = Kind::Null;
  std::string scalar;                                      // Scalar
  std::list<std::pair<std::string, Node>> map;             // Map, in file order (list: stable references)
  std::vector<Node> list;                                  // List
  std::string file;                                        // where the value was set
  int line = 0;                                            // 1-based; 0 when not from a file
  bool quoted = false;                                     // scalar was quoted in YAML: always a string

  const Node* find(const std::string& key) const;
  Node* find(const std::string& key);
  std::string where() const;                               // "file:line" or "file"
};

// Loads a YAML file, resolving `extends:` (a path relative to the file, or a list of them; later
// ones and the file itself win), then applies `a.b.c=value` overrides. Throws InputError.
Node load(const std::string& path, const std::vector<std::string>& overrides = {});
Node parse_string(const std::string& yaml, const std::string& name);
void apply_override(Node& root, const std::string& assignment, const std::string& origin);
void merge(Node& base, const Node& over);                  // over wins, maps merge recursively
std::string to_yaml(const Node& n);                        // the resolved recipe, for the run dir

// sha256 of what defines an experiment in a resolved recipe tree, so that runs of one recipe can be
// told from runs of an edited one (`kiln report`): the tree without checkpoint.*, log.*, dist.*,
// data.store_dir, train.seed / threads / eval_batch / memory_check, with absolute paths cut to
// their last component, so the same recipe in another clone, with another seed or launcher,
// hashes the same. Overrides of other keys change it.
std::string fingerprint(const Node& tree);

// Levenshtein distance: for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

class Section {
 public:
  // Every value read, defaults included, is written back into the tree, so the tree becomes the
  // complete resolved recipe; paths are written back absolute so the saved recipe reloads anywhere.
  Section(Node* node, std::string path);
  static Section root(Node& n);

  bool has(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& def);
  std::string require_string(const std::string& key);
  std::string get_choice(const std::string& key, const std::string& def,
                         const std::vector<std::string>& choices);
  int64_t get_int(const std::string& key, int64_t def, int64_t lo, int64_t hi);
  int64_t require_int(const std::string& key, int64_t lo, int64_t hi);
  double get_double(const std::string& key, double def, double lo, double hi);
  double require_double(const std::string& key, double lo, double hi);
  bool get_bool(const std::string& key, bool def);
  std::vector<std::string> get_strings(const std::string& key, const std::vector<std::string>& def);
  // A path, made absolute relative to the recipe file that set it (or the working directory for
  // command-line overrides). ${VAR} and ${VAR:-default} are expanded from the environment first.
  std::string get_path(const std::string& key, const std::string& def);
  std::string require_path(const std::string& key);
  Section sub(const std::string& key);
  const Node* raw(const std::string& key);                 // marks the key as read
  void ignore(const std::string& key);                     // a key read elsewhere

  // Throws InputError for the first key present in the YAML that no reader asked for, suggesting the
  // closest key that was asked for. Each reader calls finish() on the sections it reads.
  void finish() const;
  std::string key_path(const std::string& key) const;      // "train.lr"
  std::string where(const std::string& key) const;         // "file:line" of key or of the section

 private:
  const Node* need(const std::string& key);
  const Node& scalar_or_throw(const Node* n, const std::string& key, const char* expected) const;
  template <typename T>
  void store_default(const std::string& key, const T& value);
  [[noreturn]] void fail(const std::string& key, const std::string& msg) const;
  Node* node_;
  std::string path_;
  std::vector<std::string> known_;
};

}  // namespace kiln::recipe
