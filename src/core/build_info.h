// What this binary was built from, for run records (results.json) and `kiln version`.
#pragma once

namespace kiln {

// The git commit of the source tree at build time ("<12 hex>", "<12 hex>-dirty" when tracked
// files had changes, "unknown" outside a git checkout).
const char* git_commit();

}  // namespace kiln
