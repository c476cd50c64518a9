"""The direct path (`ops/_registry._direct`): a plain eager call runs the op's implementation and its
backward without entering the dispatcher. It must compute exactly what the registered op computes,
and every caller that observes or reroutes ops through the dispatcher must still get the op."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mbkernels
from mbkernels import backend
from mbkernels.ops import _registry
from mbkernels.ops._registry import OPS
from op_cases import CASES, linear_norm_case
from test_ops import _flat


def _run(fn, args, kwargs, seed=3):
    """Outputs and gradients of a fixed projection of them (dropout seeds drawn from seed 0)."""
    torch.manual_seed(0)
    out = fn(*args, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o.masked_fill(o == torch.finfo(o.dtype).min, 0) * torch.randn(o.shape, generator=g)).sum()
               for o in outs if o.numel())
    leaves = [t for t in _flat(args) if isinstance(t, torch.Tensor) and t.requires_grad]
    return outs, torch.autograd.grad(loss, leaves, allow_unused=True)


class _OpCalls:
    """Counts the calls of op `name`'s registered forward and backward ops."""

    def __init__(self, monkeypatch, name):
        self.forward = self.backward = 0
        opdef = OPS[name]
        real_op, real_backward = opdef.op, opdef.backward_op

        def op(*a):
            self.forward += 1
            return real_op(*a)

        def backward_op(*a):
            self.backward += 1
            return real_backward(*a)

        monkeypatch.setattr(opdef, "op", op)
        monkeypatch.setattr(opdef, "backward_op", backward_op)


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("name", list(CASES))
def test_direct_call_computes_what_the_op_computes(name, dropout, monkeypatch):
    """Bit for bit, forward and every gradient, with the same kernel recorded as having run."""
    kwargs_extra = {}
    if dropout:
        if name in ("nonorm", "layernorm"):
            pytest.skip("no dropout argument")
        kwargs_extra = ({"attn_dropout_p": 0.1, "hidden_dropout_p": 0.1} if name == "bottleneck_attention"
                        else {"dropout_p": 0.1})
    fn, args, kwargs = CASES[name](s=5)
    kwargs = {**kwargs, **kwargs_extra}
    calls = _OpCalls(monkeypatch, name)
    direct_outs, direct_grads = _run(fn, args, kwargs)
    assert (calls.forward, calls.backward) == (0, 0), "a plain eager call entered the dispatcher"
    ran = backend.last_ran[name], backend.last_ran[name + "_backward"]
    monkeypatch.setattr(_registry, "_direct", lambda flat: False)
    op_outs, op_grads = _run(fn, args, kwargs)
    assert (calls.forward, calls.backward) == (1, 1)
    assert (backend.last_ran[name], backend.last_ran[name + "_backward"]) == ran
    for got, want in zip((*direct_outs, *direct_grads), (*op_outs, *op_grads), strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            assert torch.equal(got, want)


def test_no_grad_and_inference_calls_are_direct(monkeypatch):
    fn, args, kwargs = linear_norm_case()
    calls = _OpCalls(monkeypatch, "linear_norm")
    with torch.no_grad():
        fn(*args, **kwargs)
    with torch.inference_mode():
        fn(*args, **kwargs)
    assert calls.forward == 0


class _Seen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_dispatch_mode_sees_the_op():
    """FlopCounterMode, FakeTensorMode and export's tracing are dispatch modes: they must see the op."""
    fn, args, kwargs = linear_norm_case()
    with _Seen() as seen:
        fn(*args, **kwargs)
    assert "mbkernels.linear_norm.default" in seen.names


def test_the_profiler_records_the_op():
    fn, args, kwargs = linear_norm_case()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn(*args, **kwargs)
        out.sum().backward()
    names = {e.name for e in prof.events()}
    assert {"mbkernels::linear_norm", "mbkernels::linear_norm_backward"} <= names


def test_fake_tensors_get_the_op():
    from torch._subclasses.fake_tensor import FakeTensorMode
    fn, args, kwargs = linear_norm_case()
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        out = fn(*fake, **kwargs)
    assert out.shape == (*args[0].shape[:-1], args[1].shape[0])


def test_autocast_gets_the_op(monkeypatch):
    """Autocast's cast happens at the op's autocast registration (ops/autocast.py)."""
    fn, args, kwargs = linear_norm_case()
    calls = _OpCalls(monkeypatch, "linear_norm")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fn(*args, **kwargs)
    assert calls.forward == 1


def test_a_tensor_subclass_gets_the_op(monkeypatch):
    class Tagged(torch.Tensor):
        pass

    fn, args, kwargs = linear_norm_case()
    calls = _OpCalls(monkeypatch, "linear_norm")
    fn(args[0].detach().as_subclass(Tagged), *args[1:], **kwargs)
    assert calls.forward == 1


def test_parameters_take_the_direct_path(monkeypatch):
    """A model's weights are nn.Parameters: that is the case the direct path is for."""
    fn, args, kwargs = linear_norm_case()
    calls = _OpCalls(monkeypatch, "linear_norm")
    params = [torch.nn.Parameter(a.detach()) if isinstance(a, torch.Tensor) and i else a for i, a in enumerate(args)]
    fn(*params, **kwargs).sum().backward()
    assert (calls.forward, calls.backward) == (0, 0)
    assert params[1].grad is not None


def test_double_backward_is_refused():
    fn, args, kwargs = linear_norm_case()
    out = fn(*args, **kwargs)
    (gx,) = torch.autograd.grad(out.sum(), args[0], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|double backward"):
        torch.autograd.grad(gx.sum(), args[1])


def test_reference_backend_is_unchanged():
    """use_backend("reference") bypasses both paths (plain autograd through reference.py)."""
    fn, args, kwargs = linear_norm_case()
    with mbkernels.use_backend("reference"):
        fn(*args, **kwargs)
    assert backend.last_ran["linear_norm"] == "reference"


def test_a_meta_tensor_beside_cpu_ones_gets_the_op():
    """The op routes it to the fake, whose check names it; a kernel would read no memory."""
    fn, args, kwargs = linear_norm_case()
    with pytest.raises(ValueError, match="norm_weight.*meta"):
        fn(args[0], args[1], args[2], args[3].detach().to("meta"), *args[4:], **kwargs)
