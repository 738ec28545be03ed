#include "methods/registry.h"

#include <CLI/CLI.hpp>
#include <map>

#include "core/error.h"
#include "core/config.h"
#include "core/recipe.h"

namespace kiln::methods {

namespace {
struct Entry {
  std::string description;
  TaskFactory factory;
};
// A function-local static: registrars in other translation units may run before this file's statics.
std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> t;
  return t;
}
}  // namespace

bool register_task(const std::string& name, const std::string& description, TaskFactory factory) {
  KILN_CHECK(!table().count(name), "method `{}` registered twice", name);
  table()[name] = Entry{description, std::move(factory)};
  return true;
}

bool has_task(const std::string& name) { return table().count(name) > 0; }

std::unique_ptr<Task> make_task(const Recipe& r) {
  recipe::Node tree = r.tree;
  return make_task(r.method, recipe::Section::root(tree).where("method"));
}

std::unique_ptr<Task> make_task(const std::string& name, const std::string& where) {
  auto it = table().find(name);
  if (it != table().end()) return it->second.factory();
  std::string known, best;
  size_t best_d = SIZE_MAX;
  for (auto& [n, e] : table()) {
    known += (known.empty() ? "" : ", ") + n;
    size_t d = recipe::edit_distance(name, n);
    if (d < best_d) best_d = d, best = n;
  }
  std::string hint = (!best.empty() && best_d <= 3) ? fmt::format(" (did you mean `{}`?)", best) : "";
  input_error("{}key `method`: unknown method `{}`{}; known methods: {}", where.empty() ? "" : where + ": ", name, hint,
              known.empty() ? "none" : known);
}

std::vector<std::pair<std::string, std::string>> list_tasks() {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [n, e] : table()) out.emplace_back(n, e.description);
  return out;
}

namespace {
struct Verb {
  std::string description;
  VerbSetup setup;
};
std::map<std::string, Verb>& verbs() {
  static std::map<std::string, Verb> v;
  return v;
}
}  // namespace

bool register_verb(const std::string& name, const std::string& description, VerbSetup setup) {
  KILN_CHECK(!verbs().count(name), "verb `{}` registered twice", name);
  verbs()[name] = Verb{description, std::move(setup)};
  return true;
}

void add_verbs(CLI::App& app, std::function<int()>& action) {
  for (auto& [name, v] : verbs()) v.setup(app.add_subcommand(name, v.description), action);
}

}  // namespace kiln::methods
