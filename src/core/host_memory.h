#pragma once

namespace kiln {

// Keeps glibc malloc from handing large freed blocks back to the kernel. By default every tensor
// buffer above the mmap threshold is a fresh mmap and its pages are faulted in again on each
// forward and backward: on CPU that made a LoRA training step of stories260K 4.6x slower (345 ms
// against 75 ms, docs/model.md). Called first thing in main(). Does nothing where the user tunes
// malloc already (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES, or
// KILN_MALLOC_TUNING=0, e.g. to preload jemalloc or tcmalloc instead).
void tune_host_allocator();

}  // namespace kiln
