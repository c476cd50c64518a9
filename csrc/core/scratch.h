// Per-thread scratch memory for kernels whose caller passes no workspace.
#pragma once

#include <cstddef>

namespace mbk {

// At least `floats` floats owned by the calling thread: one buffer per thread that grows to the
// largest request and is then reused (a fresh allocation of that size would be an mmap and page
// faults on every call). Valid until the same thread's next call; one user at a time per thread.
float* thread_scratch(size_t floats);

}  // namespace mbk
