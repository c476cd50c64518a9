"""One mechanism that turns an op description into its public function and two custom ops.

For op `name` it registers

    mbkernels::name(<args>, bool save) -> (<outputs>, Tensor[] saved)
    mbkernels::name_backward(Tensor[] grads, bool[] needs_grad, Tensor[] saved, <args>) -> Tensor[]

each with a fake, and the autograd formula linking them: both directions are opaque ops under
`torch.compile`, `torch.export` and opcheck, one dispatcher entry per call.

Anatomy of a call (docs/design.md, "The op"):

1. `OpDef.__call__`, the public `mbkernels.ops.<name>`: under `use_backend("reference")` it runs the
   reference with plain autograd (bypassing the custom ops: the independent oracle); otherwise the
   forward op, with `save` true exactly when a gradient is wanted; a plain eager call (`_direct`)
   runs the op's implementations without entering the dispatcher, through `_Direct` when a gradient
   is wanted. Either way it reports the outputs to the finite checks (`checks.py`) — the one place
   an op's forward is observed.
2. Inside the forward op: the arguments are validated once (`_arguments.py`), then `choose` picks the
   first backend kernel for the tensors' device whose `supports(*args)` holds, else the reference;
   `backend.last_ran[name]` records which. A kernel's forward returns its outputs and, when `save`,
   the intermediates its backward reads (so the backward runs no forward GEMM again); the reference
   saves nothing.
3. The backward op chooses the same way and gets the saved list back (empty: recompute). With no
   kernel, the reference's VJP recomputes the forward under autograd.

Gradients: one per tensor argument of the schema (`Tensor[]` flattened, in argument order); a kernel
returns None where it has none, and an empty tensor takes that slot in the op's result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from mbkernels import backend, checks
from mbkernels.ops import _arguments, int8
from mbkernels.ops.dropout import new_seed


@dataclass(frozen=True)
class Kernel:
    """One backend's implementation of an op.

    `supports(*args)` decides from metadata alone (dtypes, shapes, flags; it also runs on fake
    tensors). `forward(*args, save)` returns `(*outputs, saved)`; `saved_fake(*args)` gives the
    shapes of `saved` when `save` (None: the kernel saves nothing). `backward(grads, needs_grad,
    saved, *args)` returns one gradient or None per tensor slot; `saved` may be empty, and then it
    recomputes what it needs.
    """
    device: str                          # "cpu" (mbkernels._C) or "triton"
    supports: Callable[..., bool]
    forward: Callable[..., tuple]
    backward: Callable[..., Sequence[torch.Tensor | None]] | None  # None: the reference's VJP
    saved_fake: Callable[..., list[torch.Tensor]] | None = None

    def label(self) -> str:
        return f"cpu:{backend._C.get_isa()}" if self.device == "cpu" else "triton"


@dataclass
class OpDef:
    name: str
    args: str                     # the forward schema's arguments, e.g. "Tensor x, Tensor? residual"
    outputs: int                  # how many Tensors the op returns
    reference: Callable           # the reference, taking exactly the schema's arguments
    fake: Callable                # the outputs' shapes (a tensor or a tuple of them)
    kernels: tuple[Kernel, ...] = ()
    signature: _arguments.Signature = field(init=False)
    op: Any = field(init=False, default=None)            # mbkernels::<name>
    backward_op: Any = field(init=False, default=None)   # mbkernels::<name>_backward
    forward_impl: Callable = field(init=False)           # their implementations (`define`)
    backward_impl: Callable = field(init=False)
    tensor_indices: frozenset = field(init=False)        # where the schema's tensors are

    def __post_init__(self) -> None:
        self.signature = _arguments.Signature(self.args)
        self.tensor_indices = frozenset(i for i, *_ in self.signature.tensors)
        names = self.signature.names
        self._seed = names.index("seed") if "seed" in names else None
        self._dropout = tuple(i for i, n in enumerate(names) if n.endswith("dropout_p"))

    def __call__(self, *args):
        """The public function's body (with `seed` None): returns the output (or a tuple of them)."""
        if backend.current_backend() == "reference":
            backend.last_ran[self.name] = "reference"
            out = self.reference(*args)  # seed None: torch's own dropout, as plain PyTorch would
        else:
            if self._seed is not None and any(args[i] > 0 for i in self._dropout):
                # The counter-based masks' seed (ops/dropout.py), drawn here so that eager, traced
                # and compiled calls see it as an argument.
                args = (*args[:self._seed], new_seed(), *args[self._seed + 1:])
            flat = _flatten(self.signature, args)
            grad = _wants_grad(flat)
            if grad and int8.exists() and int8.any_int8(flat):
                raise int8.no_gradient_error(self.name)
            if not _direct(flat):
                out = self.op(*args, grad)[:-1]
            elif grad:
                out = _Direct.apply(self, args, *flat)
            else:
                # No gradient wanted: the forward below autograd, as the op's autograd kernel would
                # run it after finding nothing to record.
                with torch._C._AutoDispatchBelowAutograd():
                    out = self.forward_impl(*args, False)[:-1]
            out = out[0] if self.outputs == 1 else tuple(out)
        if checks.active():
            checks.observe(self.name, out)
        return out

    def choose(self, args, forward: bool = True) -> Kernel | None:
        """The kernel that runs these arguments, or None for the reference. Runs on every call: it
        looks at the first tensor's device only (the arguments were checked to share one)."""
        device = _first_tensor(self.signature, args).device
        current = backend.current_backend()
        if current == "triton" or device.type == "cuda":
            if int8.exists() and int8.any_int8(self.tensors(args)):
                return None  # no int8 Triton kernel: the reference computes the int8 definition
            wanted = "triton"
        elif device.type == "cpu" and backend._C is not None:
            wanted = "cpu"
        else:
            return None
        for kernel in self.kernels:
            if kernel.device == wanted and kernel.supports(*args):
                return kernel
        if wanted == "cpu" and forward and current == "fused" and any(
                t is not None and t.dtype == torch.float16 for t in self.tensors(args)):
            raise TypeError(f"mbkernels.ops.{self.name}: the fused CPU backend takes float32, float64 "
                            "or bfloat16 tensors, got float16 (use bfloat16, or "
                            "use_backend('reference') for float16 on CPU)")
        return None

    def tensors(self, args) -> list[torch.Tensor | None]:
        """The tensor arguments in schema order, `Tensor[]` flattened (None kept as a slot)."""
        return _flatten(self.signature, args)


def _flatten(signature: _arguments.Signature, args) -> list[torch.Tensor | None]:
    flat: list[torch.Tensor | None] = []
    for index, _, is_list, _ in signature.tensors:
        a = args[index]
        if is_list:
            flat.extend(a)
        else:
            flat.append(a)
    return flat


def _wants_grad(flat: list[torch.Tensor | None]) -> bool:
    if not torch.is_grad_enabled():
        return False
    for t in flat:
        if t is not None and t.requires_grad:
            return True
    return False


# Tensor types whose calls the dispatcher would route to the op's one implementation unchanged (None:
# an absent optional tensor).
_PLAIN = frozenset({torch.Tensor, torch.nn.Parameter, type(None)})
_STRIDED = frozenset({torch.strided})
_is_cpu, _is_cuda, _layout = attrgetter("is_cpu"), attrgetter("is_cuda"), attrgetter("layout")


def _direct(flat: list[torch.Tensor | None]) -> bool:
    """Whether an eager call may run the op's implementation without entering the dispatcher: when
    nothing could observe or reroute the op there (a trace or compilation, a dispatch or
    torch-function mode such as FakeTensorMode or FlopCounterMode, a functorch transform, autocast,
    the profiler) and every tensor is a plain strided tensor, all on the CPU or all on CUDA (a meta
    tensor beside CPU ones goes to the op's fake, where the argument check names it). Entering the
    dispatcher costs a Python op more than a small kernel at batch 1 (docs/design.md, "The direct
    path"); the direct path runs the same implementations (`_Direct`). Per tensor the tests run as
    maps over the list: the encoder passes 46 weights a layer."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
            or torch._C._is_torch_function_mode_enabled() or _profiling()
            or torch._C._functorch.peek_interpreter_stack() is not None
            or not _PLAIN.issuperset(map(type, flat))):
        return False
    present = [t for t in flat if t is not None]
    if not present or not _STRIDED.issuperset(map(_layout, present)):
        return False
    if all(map(_is_cpu, present)):
        return not torch.is_autocast_enabled("cpu")
    return all(map(_is_cuda, present)) and not torch.is_autocast_enabled("cuda")


def _profiling() -> bool:
    return torch.autograd.profiler._is_profiler_enabled


class _Direct(torch.autograd.Function):
    """The op's autograd formula for a direct call (`_direct`): the forward implementation with
    `save`, and the backward implementation with the saved list, as the registered op's autograd
    kernel runs them (without its argument flattening, which costs more than a small op)."""

    @staticmethod
    def forward(ctx, opdef: OpDef, args: tuple, *flat):
        *out, saved = opdef.forward_impl(*args, True)
        ctx.opdef = opdef
        _keep(ctx, opdef, args, flat, saved)
        return tuple(out)

    @staticmethod
    @once_differentiable  # as the backward op, which has no autograd formula of its own
    def backward(ctx, *grads):
        args, flat, saved = _kept(ctx, ctx.opdef)
        needs = list(ctx.needs_input_grad[2:])
        return (None, None, *_backward(ctx.opdef, ctx.site, grads, needs, saved, args, flat, ctx.opdef.backward_impl))


def _keep(ctx, opdef: OpDef, args, flat, saved) -> None:
    """What either autograd formula (the registered op's, `_Direct`) keeps of a forward call for its
    backward: the non-tensor arguments, the lists' lengths, the flat tensors and the saved list."""
    ctx.args = [None if i in opdef.tensor_indices else a for i, a in enumerate(args)]
    ctx.lengths = [len(args[i]) if is_list else None for i, _, is_list, _ in opdef.signature.tensors]
    ctx.num_saved = len(saved)
    ctx.save_for_backward(*flat, *saved)
    # No zero-filled gradients for unused outputs or the saved list: None stays None (an empty tensor
    # to the backward).
    ctx.set_materialize_grads(False)
    ctx.site = checks.current_site()  # the layer, for a check failing in the backward


def _kept(ctx, opdef: OpDef) -> tuple[list, list, list]:
    """`_keep`'s call back: (the forward's arguments, its flat tensors, the saved list)."""
    tensors = ctx.saved_tensors
    num_flat = len(tensors) - ctx.num_saved
    flat, saved = list(tensors[:num_flat]), list(tensors[num_flat:])
    args, it = list(ctx.args), iter(flat)
    for (i, _, _, _), n in zip(opdef.signature.tensors, ctx.lengths):
        args[i] = next(it) if n is None else [next(it) for _ in range(n)]
    return args, flat, saved


def _backward(opdef: OpDef, site, grads, needs: list[bool], saved, args, flat, backward) -> list:
    """The flat gradients (None where none) from `backward(grads, needs, saved, *args)` (the backward
    op, or its implementation on the direct path), called with the forward's own arguments (`flat`:
    their tensors)."""
    if all(g is None for g in grads):  # no output has a gradient: no input has one
        return [None] * len(needs)
    ref = next(t for t in flat if t is not None)
    grads = [g if g is not None else ref.new_empty(0, dtype=torch.float32) for g in grads]
    _trusted.active = True
    try:
        with checks.site(site):
            return [_none_if_empty(g) for g in backward(grads, needs, saved, *args)]
    finally:
        _trusted.active = False


def _first_tensor(signature: _arguments.Signature, args) -> torch.Tensor:
    for index, _, is_list, _ in signature.tensors:
        a = args[index]
        if is_list:
            if a:
                return a[0]
        elif a is not None:
            return a
    raise ValueError("op called without any tensor argument")


def _contiguous(out):
    return tuple(o.contiguous() for o in out) if isinstance(out, tuple) else (out.contiguous(),)


def _autograd_inside_op():
    """A custom op's kernel runs with the Autograd dispatch keys excluded, so a graph built inside it
    records nothing; lift that exclusion (leaving the rest, e.g. autocast's, as it is)."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in _AUTOGRAD_KEYS:
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


_AUTOGRAD_KEYS = [getattr(torch._C.DispatchKey, k) for k in dir(torch._C.DispatchKey)
                  if k.startswith("Autograd") or k == "ADInplaceOrView"]


def reference_vjp(opdef: OpDef, grads, needs_grad, args) -> list[torch.Tensor | None]:
    """Gradients of the reference by recomputing it under autograd (the backward with no kernel)."""
    flat_needs = iter(needs_grad)
    leaves: list[torch.Tensor] = []

    def leaf(t):
        if next(flat_needs) and t is not None and t.is_floating_point():
            t = t.detach().requires_grad_()
            leaves.append(t)
            return t
        leaves.append(None)
        return t

    with _autograd_inside_op(), torch.enable_grad():
        new_args = list(args)
        for index, _, is_list, _ in opdef.signature.tensors:
            new_args[index] = [leaf(t) for t in args[index]] if is_list else leaf(args[index])
        outs = opdef.reference(*new_args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads) if g.numel() > 0 and o.requires_grad]
        wanted = [t for t in leaves if t is not None]
        got = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                  allow_unused=True) if pairs and wanted else [None] * len(wanted)
    got = iter(got)
    return [None if t is None else _zeros_if_none(next(got), t) for t in leaves]


def _zeros_if_none(g, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def _finish_grads(grads: Sequence[torch.Tensor | None], needs_grad, flat, inputs) -> list[torch.Tensor]:
    """The backward op's result from a kernel's: an empty tensor where there is no gradient, and no
    two results (or a result and an input) sharing storage, which custom ops may not return."""
    ref = next(t for t in flat if t is not None)
    empty_dtype = ref.dtype if ref.is_floating_point() else torch.float32
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    same = {id(t) for t in inputs if t is not None}  # empty tensors share no storage, only identity
    result = []
    for g, need in zip(grads, needs_grad, strict=True):
        if g is None or not need:
            result.append(torch.empty(0, dtype=empty_dtype, device=ref.device))
            continue
        if id(g) in same or (g.numel() and g.untyped_storage().data_ptr() in seen):
            g = g.clone()
        g = g.contiguous()  # the fake says contiguous; autograd may hand out transposes
        if g.numel():
            seen.add(g.untyped_storage().data_ptr())
        same.add(id(g))
        result.append(g)
    return result


# Set while an op's autograd formula calls its backward op with the forward's own arguments and
# saved list: those need no second check (a direct call of the backward op is checked).
_trusted = threading.local()

# Every defined op by name, in definition order.
OPS: dict[str, OpDef] = {}


def define(opdef: OpDef) -> OpDef:
    """Register `mbkernels::<name>` and `mbkernels::<name>_backward` with fakes and autograd."""
    name, signature = opdef.name, opdef.signature
    outputs = ", ".join(["Tensor"] * opdef.outputs)
    tensor_indices = opdef.tensor_indices

    def forward_impl(*args):
        *args, save = args
        args = _arguments.check(name, signature, args)  # before any kernel sees them
        kernel = opdef.choose(args)
        if kernel is None:
            backend.last_ran[name] = "reference"
            return (*_contiguous(opdef.reference(*args)), [])
        backend.last_ran[name] = kernel.label()
        return kernel.forward(*args, save=save)  # (*outputs, saved)

    def forward_fake(*args):
        *args, save = args
        _arguments.check_devices_and_dtypes(name, signature, args)  # e.g. a meta tensor beside CPU ones
        out = opdef.fake(*args)
        out = out if isinstance(out, tuple) else (out,)
        kernel = opdef.choose(args) if save else None
        saved = kernel.saved_fake(*args) if kernel is not None and kernel.saved_fake is not None else []
        return (*out, saved)

    def backward_impl(grads, needs_grad, saved, *args):
        kernel = opdef.choose(args, forward=False)
        # From this op's own autograd formula the arguments are the forward's (see _trusted); a
        # direct call is checked first.
        trusted = getattr(_trusted, "active", False)
        outputs = None if trusted else _check_backward(opdef, kernel, grads, needs_grad, saved, args)
        if outputs is not None and all(g.numel() == 0 and o.numel() for g, o in zip(grads, outputs)):
            # No output has a gradient (autograd passes undefined ones, e.g. gradcheck's check):
            # every input's gradient is zero, i.e. none.
            backend.last_ran[name + "_backward"] = "none (no output gradient)"
            got = [None] * len(needs_grad)
        elif kernel is None or kernel.backward is None:
            backend.last_ran[name + "_backward"] = "reference"
            got = reference_vjp(opdef, grads, needs_grad, args)
        else:
            backend.last_ran[name + "_backward"] = kernel.label()
            got = kernel.backward(grads, needs_grad, saved, *args)
        flat = opdef.tensors(args)
        # A kernel's gradients are new tensors or views of what it was handed to differentiate (the
        # incoming gradients, the saved list); the reference's VJP may also hand back an input.
        own_backward = kernel is not None and kernel.backward is not None
        might_alias = [*grads, *saved] if own_backward else [*flat, *grads, *saved]
        out = _finish_grads(got, needs_grad, flat, might_alias)
        if checks.active():
            checks.observe(name + "_backward", out)
        return out

    def backward_fake(grads, needs_grad, saved, *args):
        flat = opdef.tensors(args)
        ref = next(t for t in flat if t is not None)
        return [t.new_empty(t.shape) if t is not None and need and t.is_floating_point()
                else ref.new_empty(0, dtype=ref.dtype if ref.is_floating_point() else torch.float32)
                for t, need in zip(flat, needs_grad)]

    opdef.forward_impl, opdef.backward_impl = forward_impl, backward_impl
    opdef.op = _register(name, f"({opdef.args}, bool save) -> ({outputs}, Tensor[])", forward_impl, forward_fake)
    opdef.backward_op = _register(
        f"{name}_backward", f"(Tensor[] grads, bool[] needs_grad, Tensor[] saved, {opdef.args}) -> Tensor[]",
        backward_impl, backward_fake)

    def setup_context(ctx, inputs, output):
        *args, _ = inputs
        saved = output[-1]
        _keep(ctx, opdef, args, _flatten(signature, args), saved)
        ctx.mark_non_differentiable(*saved)

    def autograd_backward(ctx, *grads):
        args, flat, saved = _kept(ctx, opdef)
        needs = []  # flat, as the backward op takes them (a list argument's entry is one per tensor)
        for (_, _, is_list, _), n, need in zip(signature.tensors, ctx.lengths, ctx.needs_input_grad):
            if is_list:
                needs.extend(need if isinstance(need, (list, tuple)) else [bool(need)] * n)
            else:
                needs.append(bool(need))
        grads = grads[:opdef.outputs]  # the saved list has no gradient
        got = iter(_backward(opdef, ctx.site, grads, needs, saved, args, flat, opdef.backward_op))
        result = []
        for i, a in enumerate(args):
            if i not in tensor_indices:
                result.append(None)
            elif isinstance(a, list):
                result.append([next(got) for _ in a])
            else:
                result.append(next(got))
        return (*result, None)  # save: no gradient

    torch.library.register_autograd(f"mbkernels::{name}", autograd_backward, setup_context=setup_context, lib=_LIB)
    OPS[name] = opdef
    return opdef


# The namespace's registrations live as long as this module (a Library unregisters when collected).
_LIB = torch.library.Library("mbkernels", "DEF")


def _register(name: str, schema: str, impl: Callable, fake: Callable):
    """Define `mbkernels::<name>` with one implementation for every device and its fake; returns the
    OpOverload. `torch.library.custom_op` would do the same behind a Python wrapper per call (a
    dynamo-disable frame and an output-aliasing check, ~15 µs at batch 1: the wrapper cost more than
    the NoNorm kernel); outputs here are fresh tensors by construction (`_finish_grads`), and opcheck
    in the tests checks the aliasing contract."""
    _LIB.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
    _LIB.impl(name, impl, "CompositeExplicitAutograd")
    torch.library.register_fake(f"mbkernels::{name}", fake, lib=_LIB)
    return getattr(torch.ops.mbkernels, name).default


def _check_backward(opdef: OpDef, kernel: Kernel | None, grads, needs_grad, saved, args) -> tuple:
    """The backward op's own arguments (the forward's were checked by `_arguments`): a kernel reads
    them through raw pointers, so a wrong shape here would read past a buffer. Returns the forward's
    outputs as fakes (their shapes)."""
    where = f"mbkernels.ops.{opdef.name}_backward"
    slots = len(opdef.tensors(args))
    if len(needs_grad) != slots:
        raise ValueError(f"{where}: needs_grad: expected {slots} entries (one per tensor argument), "
                         f"got {len(needs_grad)}")
    fake = opdef.fake(*args)
    fake = fake if isinstance(fake, tuple) else (fake,)
    if len(grads) != len(fake):
        raise ValueError(f"{where}: grads: expected {len(fake)} (one per output), got {len(grads)}")
    for i, (g, o) in enumerate(zip(grads, fake)):
        if g.numel() and (g.shape != o.shape or g.dtype != o.dtype):
            raise ValueError(f"{where}: grads[{i}]: expected {o.dtype} of shape {tuple(o.shape)} (the output's) "
                             f"or an empty tensor, got {g.dtype} of shape {tuple(g.shape)}")
    if not saved:
        return fake
    want = kernel.saved_fake(*args) if kernel is not None and kernel.saved_fake is not None else []
    shapes = [tuple(t.shape) for t in saved]
    if shapes != [tuple(t.shape) for t in want] or not all(
            t.dtype == w.dtype and t.is_contiguous() for t, w in zip(saved, want)):
        raise ValueError(f"{where}: saved: expected empty or what the forward saved for these arguments "
                         f"(contiguous, shapes {[tuple(t.shape) for t in want]}), got shapes {shapes}")
    return fake


def _none_if_empty(g: torch.Tensor) -> torch.Tensor | None:
    return None if g.numel() == 0 else g
