// The packed-weight cache of the CPU ops: a Linear's weight (and bias) is packed for the active
// ISA once and reused until the tensors change. What "change" means, and how inference tensors
// (which have no version counter) are handled, is explained in weight_cache.cpp.
// This header names no torch type beyond a forward declaration, so module.cpp stays torch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "gemm/gemm.h"

namespace at {
class Tensor;
}

namespace mbk::torch_cpu {

// weight [N, K] float32 (any strides), bias [N] float32 or null; both CPU tensors, checked by the
// caller. Packed for the active ISA.
std::shared_ptr<const gemm::PackedWeights> packed_weights(const at::Tensor& weight,
                                                          const at::Tensor* bias);

// One Linear of a concatenation: weight [N_i, K], bias [N_i] or null.
struct LinearRef {
  const at::Tensor* weight;
  const at::Tensor* bias;
};
// The Linears' weights stacked along N (one GEMM computes all their outputs side by side, in
// order), packed for the active ISA and cached like a single weight; every weight has the same K.
std::shared_ptr<const gemm::PackedWeights> packed_weights(const std::vector<LinearRef>& linears);

struct PackedWeightStats {
  uint64_t packs;   // PackedWeights built in this process (gemm::pack_count())
  uint64_t hits;    // cache lookups answered without packing
  uint64_t misses;  // lookups that packed
  size_t entries;   // packed weights held now
  size_t bytes;     // their size
};
PackedWeightStats packed_weight_stats();

// Drops every cached packing: the way to make the ops see writes the cache cannot detect (see
// weight_cache.cpp).
void clear_packed_weights();

}  // namespace mbk::torch_cpu
