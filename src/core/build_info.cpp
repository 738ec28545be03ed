#include "core/build_info.h"

#include "kiln_commit.h"

namespace kiln {

const char* git_commit() { return KILN_GIT_COMMIT; }

}  // namespace kiln
