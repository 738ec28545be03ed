// `kiln recipe R.yaml [overrides]`: resolves extends and overrides, validates every common
// section and the method name, and prints the complete recipe with defaults filled in: what `kiln train` would run.
#include <iostream>

#include "cli/verbs.h"
#include "core/config.h"
#include "methods/registry.h"

namespace kiln::cli {

void add_recipe(CLI::App& app, Action& action) {
  static RecipeArgs args;
  auto* sub = app.add_subcommand("recipe", "Validate a recipe and print it resolved (extends, overrides, defaults)");
  args.add_to(sub);
  sub->callback([&action] {
    action = [] {
      Recipe r = read_recipe(args.recipe, args.overrides);
      // An unknown method is refused here too, with the known ones; so is data the method cannot read.
      auto task = methods::make_task(r);
      if (auto enc = task->encoder(r); enc && !r.data.train.empty()) enc->check(r.data);
      std::cout << recipe::to_yaml(r.tree);
      return 0;
    };
  });
}

}  // namespace kiln::cli
