"""One mechanism that turns an op description into two `torch.library` custom ops.

For op `name` it defines `mbkernels::name` (forward) and `mbkernels::name_backward`, each with a
fake implementation, and registers the autograd formula that calls the backward op — so both
directions are opaque, traceable ops under `torch.compile`, `torch.export` and opcheck.

Every op runs the same way: the kernel for the tensors' device (C++ `_C` on CPU, Triton on CUDA or
under the Triton backend) when one exists and accepts the inputs, otherwise the reference inside
the op (`reference_forward`, and a VJP of it that recomputes the forward for the backward).
`backend.last_ran[name]` records which one ran.

Backward op schema: `(Tensor[] grads, bool[] needs_grad, <forward arguments>) -> Tensor[]`; it
returns one gradient per tensor argument, lists flattened, in argument order, with an empty
tensor where an argument is None or needs no gradient. Schemas carry no defaults (a default on an
optional argument confuses the autograd structure check); the public Python functions have them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mbkernels import backend, checks
from mbkernels.ops import _arguments

# A kernel returns its result, or NotImplemented when it does not handle these inputs (a dtype it
# has no code for), in which case the reference runs and says so in `backend.last_ran`.
Kernel = Callable[..., Any]


@dataclass
class OpDef:
    name: str
    args: str                     # the forward schema's argument list, e.g. "Tensor x, Tensor? r"
    returns: str                  # "Tensor" or "(Tensor, Tensor)"
    reference_forward: Callable   # the reference, taking exactly the schema's arguments
    fake: Callable                # shapes of the forward outputs
    cpu: Kernel | None = None
    cpu_backward: Kernel | None = None
    triton: Kernel | None = None
    triton_backward: Kernel | None = None
    op: Any = field(init=False, default=None)
    backward_op: Any = field(init=False, default=None)
    train_op: Any = field(init=False, default=None)           # define_saving's, where there is one
    train_backward_op: Any = field(init=False, default=None)


def _tensors(args) -> list[torch.Tensor | None]:
    """Tensor arguments flattened in order (lists expanded; None kept as a placeholder)."""
    flat: list[torch.Tensor | None] = []
    for a in args:
        if isinstance(a, (list, tuple)) and (len(a) == 0 or isinstance(a[0], torch.Tensor)):
            flat.extend(a)
        elif isinstance(a, torch.Tensor) or a is None:
            flat.append(a)
    return flat


def _device_and_fp16(args) -> tuple[torch.device, bool]:
    """The first tensor argument's device, and whether any tensor argument is float16 (one pass:
    this runs on every op call)."""
    device, fp16 = None, False
    for t in _tensors(args):
        if t is not None:
            device = device or t.device
            fp16 = fp16 or t.dtype == torch.float16
    if device is None:
        raise ValueError("op called without any tensor argument")
    return device, fp16


def _label(args, cpu: Kernel | None, triton: Kernel | None, name: str) -> tuple[Kernel | None, str]:
    """The kernel for these arguments' device and the active backend, and what to call it."""
    device, fp16 = _device_and_fp16(args)
    current = backend.current_backend()
    if fp16 and device.type == "cpu" and current == "fused" and not name.endswith("_backward"):
        raise TypeError(f"mbkernels.ops.{name}: the fused CPU backend takes float32, float64 "
                        "or bfloat16 tensors, got float16 (use bfloat16, or "
                        "use_backend('reference') for float16 on CPU)")
    if current == "triton" or device.type == "cuda":
        return triton, "triton"
    if device.type == "cpu" and backend._C is not None:
        return cpu, f"cpu:{backend._C.get_isa()}"
    return None, "reference"


def _run(args, cpu: Kernel | None, triton: Kernel | None, name: str, fallback: Callable):
    kernel, label = _label(args, cpu, triton, name)
    if kernel is not None:
        out = kernel(*args)
        if out is not NotImplemented:
            backend.last_ran[name] = label
            return out
    backend.last_ran[name] = "reference"
    out = fallback(*args)
    if isinstance(out, list):
        return out
    return tuple(o.contiguous() for o in out) if isinstance(out, tuple) else out.contiguous()


def _autograd_inside_op():
    """A custom op's kernel runs with the Autograd dispatch keys excluded, so a graph built inside it
    records nothing; lift that exclusion (leaving the rest, e.g. autocast's, as it is)."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in _AUTOGRAD_KEYS:
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


_AUTOGRAD_KEYS = [getattr(torch._C.DispatchKey, k) for k in dir(torch._C.DispatchKey)
                  if k.startswith("Autograd") or k == "ADInplaceOrView"]


def reference_vjp(reference_forward: Callable, grads, needs_grad, args) -> list[torch.Tensor]:
    """Gradients of the reference by recomputing it under autograd (the fallback backward)."""
    flat = _tensors(args)
    leaves: list[torch.Tensor | None] = []
    with _autograd_inside_op(), torch.enable_grad():
        new_args, i = [], 0
        for a in args:
            if isinstance(a, (list, tuple)) and (len(a) == 0 or isinstance(a[0], torch.Tensor)):
                items = []
                for t in a:
                    items.append(_leaf(t, needs_grad[i], leaves))
                    i += 1
                new_args.append(items)
            elif isinstance(a, torch.Tensor) or a is None:
                new_args.append(_leaf(a, needs_grad[i], leaves))
                i += 1
            else:
                new_args.append(a)
        outs = reference_forward(*new_args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads) if g.numel() > 0 and o.requires_grad]
        wanted = [t for t in leaves if t is not None]
        got = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                  allow_unused=True) if pairs and wanted else [None] * len(wanted)
    got_iter = iter(got)
    # Custom-op outputs may alias neither inputs nor each other; autograd hands out the same tensor
    # for x and residual (and the incoming gradient itself for an identity path): copy those.
    seen = {t.untyped_storage().data_ptr() for t in [*flat, *grads] if t is not None and t.numel()}
    result = []
    for t, leaf in zip(flat, leaves):
        g = next(got_iter) if leaf is not None else None
        if g is None:
            g = torch.zeros_like(t) if leaf is not None else no_grad_placeholder(flat)
        elif g.numel():
            if g.untyped_storage().data_ptr() in seen:
                g = g.clone()
            g = g.contiguous()  # the fake says contiguous; autograd may hand out transposes
            seen.add(g.untyped_storage().data_ptr())
        result.append(g)
    return result


def _leaf(t, needs: bool, leaves: list):
    if t is not None and needs and t.is_floating_point():
        leaf = t.detach().requires_grad_()
        leaves.append(leaf)
        return leaf
    leaves.append(None)
    return t


def no_grad_placeholder(flat) -> torch.Tensor:
    ref = next(t for t in flat if t is not None)
    return torch.empty(0, dtype=ref.dtype if ref.is_floating_point() else torch.float32, device=ref.device)


def _grads_fake(grads, needs_grad, *args) -> list[torch.Tensor]:
    flat = _tensors(args)
    return [t.new_empty(t.shape) if t is not None and needs_grad[i] and t.is_floating_point()
            else no_grad_placeholder(flat) for i, t in enumerate(flat)]


# Every defined op by name, in definition order.
OPS: dict[str, OpDef] = {}


def define(opdef: OpDef) -> OpDef:
    """Register `mbkernels::<name>` and `mbkernels::<name>_backward` with fake and autograd."""
    name = opdef.name
    signature = _arguments.Signature(opdef.args)

    def forward_impl(*args):
        _arguments.check(name, signature, args)  # before any kernel sees them
        out = _run(args, opdef.cpu, opdef.triton, name, opdef.reference_forward)
        checks.observe(name, out)  # the float16 flag / check mode (mbkernels/checks.py)
        return out

    def backward_impl(grads, needs_grad, *args):
        out = _run((grads, needs_grad, *args), opdef.cpu_backward, opdef.triton_backward,
                   name + "_backward",
                   lambda grads, needs_grad, *a: reference_vjp(opdef.reference_forward, grads, needs_grad, a))
        checks.observe(name + "_backward", out)
        return out

    def fake(*args):
        _arguments.check_devices_and_dtypes(name, signature, args)  # e.g. a meta tensor beside CPU ones
        return opdef.fake(*args)

    opdef.op = torch.library.custom_op(
        f"mbkernels::{name}", forward_impl, mutates_args=(), schema=f"({opdef.args}) -> {opdef.returns}")
    opdef.op.register_fake(fake)
    opdef.backward_op = torch.library.custom_op(
        f"mbkernels::{name}_backward", backward_impl, mutates_args=(),
        schema=f"(Tensor[] grads, bool[] needs_grad, {opdef.args}) -> Tensor[]")
    opdef.backward_op.register_fake(_grads_fake)

    def backward(ctx, *grads):
        args, needs = _saved_args(ctx, iter(ctx.saved_tensors))
        grads = _grads_or_empty(grads, args)
        with checks.site(ctx.site):
            return _unflatten(ctx.structure, opdef.backward_op(grads, needs, *args))

    opdef.op.register_autograd(backward, setup_context=_setup_context)
    OPS[name] = opdef
    return opdef


def _setup_context(ctx, inputs, output, saved=()):
    """Keep the forward's arguments (tensors saved, the rest by value) and `saved`, its kept
    intermediates, for the backward."""
    ctx.structure = [("list", len(a)) if isinstance(a, (list, tuple)) and
                     (len(a) == 0 or isinstance(a[0], torch.Tensor))
                     else ("tensor", 1) if isinstance(a, torch.Tensor) or a is None
                     else ("value", a) for a in inputs]
    ctx.num_saved = len(saved)
    ctx.save_for_backward(*_tensors(inputs), *saved)
    ctx.site = checks.current_site()  # the layer, for a check failing in the backward


def _saved_args(ctx, saved) -> tuple[list, list[bool]]:
    """The forward's arguments rebuilt from the context, and one needs-grad flag per tensor."""
    args, needs = [], []
    for (kind, v), need in zip(ctx.structure, ctx.needs_input_grad):
        if kind == "list":
            args.append([next(saved) for _ in range(v)])
            needs.extend(need if isinstance(need, (list, tuple)) else [bool(need)] * v)
        elif kind == "tensor":
            args.append(next(saved))
            needs.append(bool(need))
        else:
            args.append(v)
    return args, needs


def _grads_or_empty(grads, args) -> list[torch.Tensor]:
    ref = next(t for t in _tensors(args) if t is not None)
    return [g if g is not None else ref.new_empty(0, dtype=torch.float32) for g in grads]


def _unflatten(structure, flat: list[torch.Tensor]) -> tuple:
    """One gradient per forward argument (a list for a Tensor[] one, None for no gradient)."""
    flat = iter(flat)
    result = []
    for kind, v in structure:
        if kind == "list":
            result.append([_none_if_empty(next(flat)) for _ in range(v)])
        elif kind == "tensor":
            result.append(_none_if_empty(next(flat)))
        else:
            result.append(None)
    return tuple(result)


def saving_applies(tensors) -> bool:
    """Whether an op call takes its saving training forward (`define_saving`): a gradient is wanted
    and the C++ kernel runs it (CPU, the fused backend, `_C` built, float32). The op adds its own
    conditions (dropout, activation) on top."""
    tensors = [t for t in tensors if t is not None]
    return (torch.is_grad_enabled() and backend._C is not None and backend.current_backend() == "fused"
            and tensors[0].device.type == "cpu" and all(t.dtype == torch.float32 for t in tensors)
            and any(t.requires_grad for t in tensors))


def define_saving(opdef: OpDef, forward: Kernel, saved_fake: Callable, backward: Kernel) -> Any:
    """The training forward of a defined op, for a kernel that keeps intermediates so its backward
    does not recompute the forward (the frozen op saves only its inputs).

    Registers `mbkernels::<name>_train(<args>) -> (<outputs>, Tensor[] saved)` and
    `mbkernels::<name>_train_backward(Tensor[] grads, bool[] needs_grad, Tensor[] saved, <args>)
    -> Tensor[]` (the gradients as `<name>_backward` gives them). `forward(*args)` returns the
    outputs and the saved list, `saved_fake(*args)` that list's shapes, `backward(grads,
    needs_grad, saved, *args)` the gradients. The caller decides (before calling) that the kernel
    runs these inputs: there is no reference fallback, a saved list is not the reference's.
    """
    signature = _arguments.Signature(opdef.args)
    name, outputs = opdef.name + "_train", opdef.returns.strip("()")

    def forward_impl(*args):
        _arguments.check(opdef.name, signature, args)
        *out, saved = forward(*args)
        # Under both names: the op's forward ran on this kernel, and it was the saving one.
        backend.last_ran[opdef.name] = backend.last_ran[name] = f"cpu:{backend._C.get_isa()}"
        # Finite checks name the public op: which of its forwards ran is an implementation detail.
        checks.observe(opdef.name, out[0] if len(out) == 1 else tuple(out))
        return (*out, saved)

    def fake(*args):
        _arguments.check_devices_and_dtypes(opdef.name, signature, args)
        out = opdef.fake(*args)
        return (*(out if isinstance(out, tuple) else (out,)), saved_fake(*args))

    def backward_impl(grads, needs_grad, saved, *args):
        out = backward(grads, needs_grad, saved, *args)
        backend.last_ran[opdef.name + "_backward"] = backend.last_ran[name + "_backward"] = \
            f"cpu:{backend._C.get_isa()}"
        checks.observe(opdef.name + "_backward", out)
        return out

    op = torch.library.custom_op(f"mbkernels::{name}", forward_impl, mutates_args=(),
                                 schema=f"({opdef.args}) -> ({outputs}, Tensor[])")
    op.register_fake(fake)
    backward_op = torch.library.custom_op(
        f"mbkernels::{name}_backward", backward_impl, mutates_args=(),
        schema=f"(Tensor[] grads, bool[] needs_grad, Tensor[] saved, {opdef.args}) -> Tensor[]")
    backward_op.register_fake(lambda grads, needs_grad, saved, *args: _grads_fake(grads, needs_grad, *args))

    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output, saved=output[-1])
        ctx.mark_non_differentiable(*output[-1])
        # No zero-filled gradients for the saved list (megabytes per call): None stays None.
        ctx.set_materialize_grads(False)

    def autograd_backward(ctx, *grads):
        tensors = list(ctx.saved_tensors)
        saved = tensors[len(tensors) - ctx.num_saved:]
        args, needs = _saved_args(ctx, iter(tensors))
        grads = _grads_or_empty(grads[:-1], args)  # the saved list has no gradient
        with checks.site(ctx.site):
            return _unflatten(ctx.structure, backward_op(grads, needs, saved, *args))

    op.register_autograd(autograd_backward, setup_context=setup_context)
    opdef.train_op, opdef.train_backward_op = op, backward_op
    return op


def _none_if_empty(g: torch.Tensor) -> torch.Tensor | None:
    return None if g.numel() == 0 else g
