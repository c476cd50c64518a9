// The packed-weight cache (weight_cache.h).
//
// Key: the identity of each weight's and bias's storage (StorageImpl), their offsets, sizes and
// strides, and the ISA (a concatenation of Linears, packed as one, keys on all of them). Each entry holds a *weak* reference to those storages: while it does,
// a freed storage's StorageImpl cannot be reallocated at the same address, so a new tensor can
// never be mistaken for an old one (a plain data_ptr key would be: allocators reuse addresses),
// and the cache does not keep freed weights' memory alive. Entries whose storage is gone are
// dropped whenever something is packed.
//
// Validity: the entry is reused when each tensor's data pointer and stamp are unchanged.
//  - Normal tensors: the stamp is the version counter, which every in-place write through torch
//    bumps (optimizer steps, copy_, load_state_dict, in-place ops in inference mode). Writes that
//    bypass it (through `.data`, numpy, or raw pointers) are invisible, as they are to autograd.
//  - Inference tensors (made under torch.inference_mode) have no version counter. We treat them
//    as what inference tensors usually are, frozen values, and stamp them with a fingerprint of
//    32 elements spread over the tensor: wholesale rewrites (copy_, a new checkpoint loaded in
//    place) change it, at the cost of 32 scattered loads per lookup rather than a pass over the
//    tensor (which would cost as much as the GEMM). A write that touches none of the sampled
//    elements goes unnoticed: call mbkernels._C.clear_packed_weights() after such writes.
#include "weight_cache.h"

#include <ATen/ATen.h>
#include <c10/util/intrusive_ptr.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

namespace mbk::torch_cpu {
namespace {

struct TensorKey {
  const void* storage = nullptr;  // StorageImpl*, kept unique by the entry's weak reference
  int64_t offset = 0, size0 = 0, size1 = 0, stride0 = 0, stride1 = 0;
  auto tie() const { return std::tie(storage, offset, size0, size1, stride0, stride1); }
};

struct Key {
  std::vector<TensorKey> tensors;  // weight, bias (empty key if none) per Linear
  int isa;
  bool operator<(const Key& o) const {
    if (isa != o.isa) return isa < o.isa;
    return std::lexicographical_compare(
        tensors.begin(), tensors.end(), o.tensors.begin(), o.tensors.end(),
        [](const TensorKey& a, const TensorKey& b) { return a.tie() < b.tie(); });
  }
};

struct Stamp {
  const void* data = nullptr;
  int64_t version = -1;      // normal tensors
  uint64_t fingerprint = 0;  // inference tensors
  bool operator==(const Stamp& o) const {
    return data == o.data && version == o.version && fingerprint == o.fingerprint;
  }
};

struct Entry {
  std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>> storages;  // of the tensors present
  std::vector<Stamp> stamps;                                        // per key tensor
  std::shared_ptr<const gemm::PackedWeights> packed;

  bool alive() const {
    for (const auto& s : storages)
      if (s.expired()) return false;
    return true;
  }
};

TensorKey tensor_key(const at::Tensor& t) {
  TensorKey k;
  k.storage = t.storage().unsafeGetStorageImpl();
  k.offset = t.storage_offset();
  k.size0 = t.size(0);
  k.stride0 = t.stride(0);
  if (t.dim() > 1) {
    k.size1 = t.size(1);
    k.stride1 = t.stride(1);
  }
  return k;
}

uint64_t fingerprint(const at::Tensor& t) {
  constexpr int kSamples = 32;
  const int64_t numel = t.numel();
  const float* p = t.const_data_ptr<float>();
  const int64_t cols = t.dim() > 1 ? t.size(1) : 1;
  const int64_t s0 = t.stride(0), s1 = t.dim() > 1 ? t.stride(1) : 0;
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the sampled elements' bits
  for (int i = 0; i < kSamples && numel > 0; ++i) {
    const int64_t e = numel == 1 ? 0 : (numel - 1) * i / (kSamples - 1);
    float v = p[(e / cols) * s0 + (e % cols) * s1];
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    h = (h ^ bits) * 1099511628211ull;
  }
  return h;
}

Stamp stamp(const at::Tensor& t) {
  Stamp s;
  s.data = t.const_data_ptr();
  if (t.is_inference())
    s.fingerprint = fingerprint(t);
  else
    s.version = static_cast<int64_t>(t._version());
  return s;
}

struct Cache {
  std::mutex mu;
  std::map<Key, Entry> entries;
  uint64_t hits = 0, misses = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: ops may run during interpreter shutdown
  return *c;
}

}  // namespace

std::shared_ptr<const gemm::PackedWeights> packed_weights(const std::vector<LinearRef>& linears) {
  const Isa isa = active_isa();
  Key key{{}, static_cast<int>(isa)};
  std::vector<Stamp> stamps;
  for (const LinearRef& l : linears) {
    key.tensors.push_back(tensor_key(*l.weight));
    key.tensors.push_back(l.bias != nullptr ? tensor_key(*l.bias) : TensorKey{});
    stamps.push_back(stamp(*l.weight));
    stamps.push_back(l.bias != nullptr ? stamp(*l.bias) : Stamp{});
  }

  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.entries.find(key);
  if (it != c.entries.end() && it->second.alive() && it->second.stamps == stamps) {
    ++c.hits;
    return it->second.packed;
  }
  ++c.misses;
  // One Linear packs straight from its (possibly strided) weight; a concatenation is stacked first.
  at::Tensor w, b;
  bool any_bias = false;
  for (const LinearRef& l : linears) any_bias = any_bias || l.bias != nullptr;
  if (linears.size() == 1) {
    w = *linears[0].weight;
  } else {
    std::vector<at::Tensor> ws;
    for (const LinearRef& l : linears) ws.push_back(*l.weight);
    w = at::cat(ws, 0);
  }
  if (any_bias) {
    std::vector<at::Tensor> bs;
    for (const LinearRef& l : linears)
      bs.push_back(l.bias != nullptr ? l.bias->contiguous() : at::zeros({l.weight->size(0)}, l.weight->options()));
    b = at::cat(bs, 0);
  }
  auto packed = std::make_shared<const gemm::PackedWeights>(
      w.const_data_ptr<float>(), w.stride(0), w.stride(1),
      any_bias ? b.const_data_ptr<float>() : nullptr, w.size(0), w.size(1), isa);
  for (auto e = c.entries.begin(); e != c.entries.end();)
    e = e->second.alive() ? std::next(e) : c.entries.erase(e);
  Entry entry{{}, std::move(stamps), packed};
  for (const LinearRef& l : linears) {
    entry.storages.push_back(l.weight->storage().getWeakStorageImpl());
    if (l.bias != nullptr) entry.storages.push_back(l.bias->storage().getWeakStorageImpl());
  }
  c.entries.insert_or_assign(std::move(key), std::move(entry));
  return packed;
}

std::shared_ptr<const gemm::PackedWeights> packed_weights(const at::Tensor& weight,
                                                          const at::Tensor* bias) {
  return packed_weights(std::vector<LinearRef>{{&weight, bias}});
}

PackedWeightStats packed_weight_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  PackedWeightStats s{gemm::pack_count(), c.hits, c.misses, c.entries.size(), 0};
  for (const auto& kv : c.entries) s.bytes += kv.second.packed->bytes();
  return s;
}

void clear_packed_weights() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.entries.clear();
}

}  // namespace mbk::torch_cpu
