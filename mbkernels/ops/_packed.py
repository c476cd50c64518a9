"""The packed-weight cache of the CPU kernels: a Linear's weight (and bias) is packed for the active
ISA once (`_C.pack_weights`, the GEMM's panel layout) and reused until the tensors change.

Key: each weight's and bias's storage (its StorageImpl), offset, sizes and strides, and the ISA; a
concatenation of Linears (one GEMM computing all their outputs side by side) keys on all of them.
An entry holds a weak reference to those storages: while it does, a freed storage cannot be
reallocated at the same address, so a new tensor is never mistaken for an old one (a data_ptr key
would be: allocators reuse addresses), and the cache never keeps a freed weight's memory alive.
Entries whose storage is gone (their packings) are dropped whenever the cache has doubled since the
last sweep: sweeping on every pack cost 300 ms of a training step, which repacks every weight.

Validity: the entry is reused while each tensor's data pointer and stamp are unchanged.
- Normal tensors: the stamp is the version counter, which every in-place write through torch bumps
  (optimizer steps, `copy_`, `load_state_dict`). Writes that bypass it (`.data`, numpy, raw
  pointers) are invisible here, as they are to autograd.
- Inference tensors (made under `torch.inference_mode`) have no version counter. They are usually
  frozen values; their stamp is a fingerprint of 32 elements spread over the tensor, which a wholesale
  rewrite (a checkpoint loaded in place) changes at the cost of 32 loads, not a pass over the
  tensor. A write touching none of those elements goes unnoticed: call `clear()` after one.

In front of that, `_derived.py` finds a packing by the identity of its tensors; `prepared()` does
the same for what an op builds on packings (its weight arguments), so a call finds all its weights
with one lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from mbkernels import backend
from mbkernels.ops import _derived, int8

T = TypeVar("T")

_lock = threading.Lock()
_entries: dict[tuple, tuple[list, tuple, object]] = {}  # key -> (storage refs, stamps, packed)
_hits = _misses = 0
_FIRST_SWEEP = 64
_sweep_at = _FIRST_SWEEP  # the size at which expired entries are next dropped


def _key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage()._cdata, t.storage_offset(), *t.shape, *t.stride())


def stamp(t: torch.Tensor):
    if t.is_inference():
        cols = t.shape[-1] if t.dim() > 1 else 1
        return t.data_ptr(), backend._C.fingerprint(t.data_ptr(), t.numel(), cols, t.stride(0),
                                                    t.stride(-1) if t.dim() > 1 else 1)
    return t.data_ptr(), t._version


def prepared(key: tuple, tensors: Sequence[torch.Tensor | None], build: Callable[[], T]) -> T:
    """What an op builds from its weights on the packings of the active ISA (`_derived.derived`),
    found again with one lookup while they are unchanged."""
    return _derived.derived((*key, backend._C.get_isa()), tensors, build)


def packed(linears: Sequence[tuple[torch.Tensor, torch.Tensor | None]]):
    """The packed form of the Linears `(weight [n_i, k], bias [n_i] or None)` stacked along n, for
    the active ISA. Weights are float32 CPU tensors (checked by the caller), any strides, or all
    int8 weights (ops/int8.py) sharing one smooth: packed for the int8 GEMM with their scales."""
    if int8.form(linears[0][0]) is None:
        return prepared(("packed",), [t for pair in linears for t in pair], lambda: _packed(linears))
    forms = [int8.form(w) for w, _ in linears]
    tensors = [t for (w, b), f in zip(linears, forms) for t in (w, b, *(f or (None, None)))]
    return prepared(("packed int8",), tensors, lambda: _packed_int8(linears, forms))


def _packed(linears):
    """The storage-keyed lookup, then the packing (`prepared` missed: new tensor objects, or changed)."""
    global _hits, _misses, _sweep_at
    tensors = [t for pair in linears for t in pair if t is not None]
    isa = backend._C.get_isa()
    stamps = tuple(stamp(t) for t in tensors)
    key = (isa, tuple(None if t is None else _key(t) for pair in linears for t in pair))
    with _lock:
        entry = _entries.get(key)
        if entry is not None and entry[1] == stamps:
            _hits += 1
            return entry[2]
    weight, bias = _stacked(linears)
    n, k = weight.shape
    result = backend._C.pack_weights(weight.data_ptr(), weight.stride(0), weight.stride(1),
                                     0 if bias is None else bias.data_ptr(), n, k)
    refs = [StorageWeakRef(t.untyped_storage()) for t in tensors]
    with _lock:
        _misses += 1
        _entries[key] = (refs, stamps, result)
        if len(_entries) >= _sweep_at:
            for stale in [k for k, (r, _, _) in _entries.items() if any(ref.expired() for ref in r)]:
                del _entries[stale]
            _sweep_at = max(_FIRST_SWEEP, 2 * len(_entries))
    return result


def _packed_int8(linears, forms):
    """The int8 packing (no storage-keyed cache: a quantized model's weights are few and frozen)."""
    if any(f is None for f in forms):
        raise TypeError("a GEMM stacks int8 and float32 weights (quantize every Linear that reads the same input, "
                        "or none)")
    smooth = forms[0].smooth
    if any((f.smooth is None) != (smooth is None) or (smooth is not None and not torch.equal(f.smooth, smooth))
           for f in forms):
        raise ValueError("int8 weights stacked into one GEMM read one input: expected one input_smooth for all "
                         "of them, got different ones")
    weight, bias = _stacked(linears)
    scale = torch.cat([f.scale for f in forms]).float().contiguous()
    smooth = None if smooth is None else smooth.float().contiguous()
    n, k = weight.shape
    return backend._C.pack_weights_int8(weight.data_ptr(), weight.stride(0), weight.stride(1), scale.data_ptr(),
                                        0 if smooth is None else smooth.data_ptr(),
                                        0 if bias is None else bias.data_ptr(), n, k)


def _stacked(linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    if len(linears) == 1:
        weight, bias = linears[0]
        return weight, None if bias is None else bias.contiguous()
    weight = torch.cat([w for w, _ in linears])
    if all(b is None for _, b in linears):
        return weight, None
    return weight, torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in linears])


def stats() -> dict[str, int]:
    """packs (PackedWeights built in this process), hits (lookups answered without packing: one per
    `derived` reuse, one per storage-key reuse), misses, entries and their bytes."""
    with _lock:
        live = [e for e in _entries.values() if not any(ref.expired() for ref in e[0])]
        return {"packs": backend._C.pack_count(), "hits": _hits + _derived.hits, "misses": _misses,
                "entries": len(live), "bytes": sum(e[2].bytes for e in live)}


def clear() -> None:
    """Drop every packing: the way to make the kernels see writes the stamps cannot detect."""
    with _lock:
        _entries.clear()
    _derived.clear()
