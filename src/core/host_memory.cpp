#include "core/host_memory.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kiln {

void tune_host_allocator() {
#if defined(__GLIBC__)
  for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"})
    if (std::getenv(v)) return;
  if (const char* v = std::getenv("KILN_MALLOC_TUNING"); v && std::strcmp(v, "0") == 0) return;
  // Blocks up to 1 GiB come from the heap and are reused; larger ones (a 128k-token embedding
  // matrix) are still mapped on their own. Freed heap memory is kept for the next step: the
  // process holds its peak, as a caching allocator does.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
#endif
}

}  // namespace kiln
