"""What every op accepts: shapes, dtypes, devices and values, checked before any kernel runs.

The registry calls `check(name, args)` inside each custom op (so `torch.compile` never traces it and
the kernels — C++ on CPU, Triton on CUDA — never see arguments that would make them read or write
memory they do not own). Each failure is a `ValueError` (shape, value, device) or `TypeError`
(dtype) whose message names the op, the argument, what was expected and what came:
`mbkernels.ops.linear_norm: weight: expected shape (N, 512) (in_features = x's last dim), got (128, 5)`.
Empty batches and non-contiguous or expanded tensors are valid. `use_backend("reference")`
bypasses the custom ops, and with them these checks: there the plain torch of `reference.py` runs.
"""

from __future__ import annotations

import torch

from mbkernels.ops import _derived, int8

NORMS = ("nonorm", "layernorm")
ACTS = ("relu", "gelu")
MODES = ("shared", "bottleneck", "full", "none")
# Arguments that hold integers (ids, masks, the dropout seed); every other tensor is floating point.
_INTEGER = frozenset({"input_ids", "token_type_ids", "position_ids", "key_mask", "seed"})


class _Op:
    """The checks of one op call. Messages are formatted only on failure: these run on every call."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def fail(self, arg, expected: str, got) -> None:
        raise ValueError(f"mbkernels.ops.{self.name}: {_label(arg)}: expected {expected}, got {got}")

    def fail_type(self, arg, expected: str, got) -> None:
        raise TypeError(f"mbkernels.ops.{self.name}: {_label(arg)}: expected {expected}, got {got}")

    def shape(self, arg, t: torch.Tensor | None, expected: tuple, why: str = "", optional: bool = False) -> None:
        """`t` has exactly shape `expected` (a None first entry matches any size). `arg` is a name or
        (list name, i)."""
        if t is None:
            if not optional:
                self.fail(arg, f"a tensor of shape {_show(expected)}{why}", "None")
            return
        got = t.shape
        if got == expected or (expected[0] is None and len(got) == len(expected) and got[1:] == expected[1:]):
            return
        self.fail(arg, f"shape {_show(expected)}{why}", tuple(got))

    def dims(self, arg: str, t: torch.Tensor, n: int, layout: str) -> None:
        if t.dim() != n:
            self.fail(arg, f"a {n}-d tensor {layout}", f"shape {tuple(t.shape)}")

    def choice(self, arg: str, value, choices: tuple) -> None:
        if value not in choices:
            self.fail(arg, f"one of {choices}", repr(value))

    def probability(self, arg: str, p: float) -> None:
        if not 0.0 <= p < 1.0:
            self.fail(arg, "a probability in [0, 1)", p)

    def ids(self, arg: str, t: torch.Tensor, shape: tuple, high: int, what: str) -> None:
        """An integer tensor of `shape` with values in [0, high) (rows of `what`)."""
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            self.fail_type(arg, "an integer tensor (torch.long)", t.dtype)
        self.shape(arg, t, shape)
        if t.numel():
            lo, hi = torch.aminmax(t)
            lo, hi = int(lo), int(hi)
            if lo < 0 or hi >= high:
                self.fail(arg, f"values in [0, {high}) (the rows of {what})", f"min {lo}, max {hi}")

    def key_mask(self, m: torch.Tensor | None, batch: int, keys: int) -> None:
        if m is None:
            return
        self.shape("key_mask", m, (batch, keys), " ([batch, keys], 1 = attend)")
        if m.dtype == torch.bool:
            return
        if m.dtype.is_floating_point or m.dtype.is_complex:
            self.fail_type("key_mask", "a bool or 0/1 integer tensor (modules convert float masks)", m.dtype)
        bad = (m != 0) & (m != 1)
        if bool(bad.any()):
            self.fail("key_mask", "values 0 or 1", int(m[bad][0]))


def _label(arg) -> str:
    return arg if isinstance(arg, str) else f"{arg[0]}[{arg[1]}]"


def _show(shape: tuple) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _common(op: _Op, signature: Signature, args, fake: bool = False) -> None:
    """One device for every tensor; one floating dtype for the float tensors (outside autocast).
    Devices are compared by `get_device()` (-1 on CPU; cheap) except for fake tensors."""
    device = dtype = None
    first = first_float = None
    for index, arg, is_list, integer in signature.tensors:
        a = args[index]
        if a is None:
            continue
        for i, t in enumerate(a) if is_list else ((None, a),):
            d = t.device if fake else t.get_device()
            if first is None:
                device, first = d, (arg, i)
            elif d != device:
                op.fail(_at(arg, i), f"a tensor on {_device_of(args, signature, first)} (like {_label(_at(*first))})",
                        f"a tensor on {t.device}")
            if integer:
                continue
            dt = t.dtype
            if dt is dtype:
                continue
            if not dt.is_floating_point:
                if int8.form(t) is not None:  # a quantized Linear's weight (ops/int8.py)
                    continue
                op.fail_type(_at(arg, i), "a floating-point tensor", dt)
            if dtype is None:
                dtype, first_float = dt, (arg, i)
            elif not torch.is_autocast_enabled(t.device.type):
                op.fail_type(_at(arg, i), f"{dtype} (the dtype of {_label(_at(*first_float))})", dt)


def _at(arg: str, i):
    return arg if i is None else (arg, i)


def _device_of(args, signature: Signature, first) -> torch.device:
    arg, i = first
    a = args[signature.names.index(arg)]
    return (a if i is None else a[i]).device


def _nonorm(op, x, weight, bias, residual, eps=None):
    if x.dim() < 1:
        op.fail("x", "a tensor of at least 1 dimension (features last)", "a 0-d tensor")
    c = x.shape[-1]
    op.shape("weight", weight, (c,), " (x's last dim)")
    op.shape("bias", bias, (c,), " (x's last dim)")
    op.shape("residual", residual, tuple(x.shape), " (as x)", optional=True)
    if eps is not None and not eps >= 0:
        op.fail("eps", "a non-negative float", eps)


def _linear_norm(op, x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed):
    if x.dim() < 1:
        op.fail("x", "a tensor of at least 1 dimension (features last)", "a 0-d tensor")
    op.choice("norm", norm, NORMS)
    op.probability("dropout_p", dropout_p)
    k = x.shape[-1]
    op.shape("weight", weight, (None, k), " (in_features = x's last dim)")
    n = weight.shape[0]
    op.shape("bias", bias, (n,), " (out_features)", optional=True)
    op.shape("norm_weight", norm_weight, (n,), " (out_features)")
    op.shape("norm_bias", norm_bias, (n,), " (out_features)")
    op.shape("residual", residual, (*x.shape[:-1], n), " (x's with out_features last)", optional=True)


def _attention(op, q, k, v, key_mask, dropout_p, seed, return_scores):
    for arg, t in (("q", q), ("k", k), ("v", v)):
        op.dims(arg, t, 4, "[batch, heads, sequence, head_size]")
    b, h, s, d = q.shape
    op.shape("k", k, (b, h, k.shape[2], d), " (q's batch, heads and head size)")
    op.shape("v", v, (b, h, k.shape[2], v.shape[3]), " (k's batch, heads and keys)")
    op.key_mask(key_mask, b, k.shape[2])
    op.probability("dropout_p", dropout_p)


# (weight, bias, norm_weight, norm_bias) argument names of bottleneck_attention's dense+norm groups.
_DENSE_NORM = {p: (f"{p}_weight", f"{p}_bias", f"{p}_norm_weight", f"{p}_norm_bias")
               for p in ("input", "attention", "output")}


def _dense_norm(op, prefix, params, fan_in, why):
    """A Linear(fan_in → n) + norm group; returns n."""
    names = _DENSE_NORM[prefix]
    weight, bias, nw, nb = params
    op.shape(names[0], weight, (None, fan_in), why)
    n = weight.shape[0]
    op.shape(names[1], bias, (n,), " (the weight's rows)", optional=True)
    op.shape(names[2], nw, (n,), " (the weight's rows)")
    op.shape(names[3], nb, (n,), " (the weight's rows)")
    return n


def _bottleneck_attention(op, h, key_mask, *rest):
    num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores = rest[18:]
    op.choice("mode", mode, MODES)
    op.choice("norm", norm, NORMS)
    op.probability("attn_dropout_p", attn_p)
    op.probability("hidden_dropout_p", hidden_p)
    op.dims("h", h, 3, "[batch, sequence, hidden]")
    b, s, hidden = h.shape
    op.key_mask(key_mask, b, s)
    intra = _dense_norm(op, "input", rest[0:4], hidden, " (in_features = h's last dim)") if mode != "none" else hidden
    if mode == "shared":
        _dense_norm(op, "attention", rest[4:8], hidden, " (in_features = h's last dim)")
    # Q and K read h ("full", "none") or a bottleneck; V reads the bottleneck only in "bottleneck" mode.
    qk_in = hidden if mode in ("full", "none") else intra
    v_in = intra if mode == "bottleneck" else hidden
    query_weight, query_bias, key_weight, key_bias, value_weight, value_bias = rest[8:14]
    op.shape("query_weight", query_weight, (None, qk_in), " (in_features = the width Q reads in this mode)")
    width = query_weight.shape[0]
    if num_heads < 1 or width % num_heads:
        op.fail("num_heads", f"a divisor of the attention width {width} (query_weight's rows)", num_heads)
    op.shape("query_bias", query_bias, (width,), " (query_weight's rows)", optional=True)
    op.shape("key_weight", key_weight, (width, qk_in), " (as query_weight)")
    op.shape("key_bias", key_bias, (width,), " (query_weight's rows)", optional=True)
    op.shape("value_weight", value_weight, (width, v_in), " (query_weight's rows, the width V reads in this mode)")
    op.shape("value_bias", value_bias, (width,), " (query_weight's rows)", optional=True)
    out = _dense_norm(op, "output", rest[14:18], width, " (in_features = the attention width)")
    if out != intra:
        op.fail("output_weight", f"{intra} rows (the width of the residual: "
                f"{'h' if mode == 'none' else 'the bottleneck'})", f"shape {tuple(rest[14].shape)}")


def _ffn_stack(op, x, w1s, b1s, w2s, b2s, nws, nbs, act, norm, eps, dropout_p, seed):
    op.choice("act", act, ACTS)
    op.choice("norm", norm, NORMS)
    op.probability("dropout_p", dropout_p)
    n = len(w1s)
    if n == 0:
        op.fail("intermediate_weights", "at least one FFN", "an empty list")
    for arg, lst in (("intermediate_biases", b1s), ("output_weights", w2s), ("output_biases", b2s),
                     ("norm_weights", nws), ("norm_biases", nbs), ("eps", eps)):
        if len(lst) != n:
            op.fail(arg, f"{n} entries (one per FFN)", len(lst))
    if x.dim() < 1:
        op.fail("x", "a tensor of at least 1 dimension (features last)", "a 0-d tensor")
    width = x.shape[-1]
    for i in range(n):
        op.shape(("intermediate_weights", i), w1s[i], (None, width), " (in_features = x's last dim)")
        inter = w1s[i].shape[0]
        op.shape(("intermediate_biases", i), b1s[i], (inter,), " (the intermediate_weights' rows)")
        op.shape(("output_weights", i), w2s[i], (width, inter), " (x's last dim, the intermediate_weights' rows)")
        op.shape(("output_biases", i), b2s[i], (width,), " (x's last dim)")
        op.shape(("norm_weights", i), nws[i], (width,), " (x's last dim)")
        op.shape(("norm_biases", i), nbs[i], (width,), " (x's last dim)")


def _embedding(op, input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
               transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias, padding_idx,
               trigram, norm, eps, dropout_p, seed):
    op.choice("norm", norm, NORMS)
    op.probability("dropout_p", dropout_p)
    op.dims("word_embeddings", word_embeddings, 2, "[vocab, embedding]")
    vocab, emb = word_embeddings.shape
    if (input_ids is None) == (inputs_embeds is None):
        op.fail("input_ids / inputs_embeds", "exactly one of them", "both" if input_ids is not None else "neither")
    if input_ids is not None:
        op.dims("input_ids", input_ids, 2, "[batch, sequence]")
        shape = tuple(input_ids.shape)
        op.ids("input_ids", input_ids, shape, vocab, "word_embeddings")
    else:
        op.dims("inputs_embeds", inputs_embeds, 3, "[batch, sequence, embedding]")
        shape = tuple(inputs_embeds.shape[:2])
        op.shape("inputs_embeds", inputs_embeds, (*shape, emb), " (word_embeddings' width last)")
    op.dims("position_embeddings", position_embeddings, 2, "[positions, hidden]")
    positions, hidden = position_embeddings.shape
    op.shape("token_type_embeddings", token_type_embeddings, (None, hidden), " (hidden as position_embeddings)")
    op.ids("token_type_ids", token_type_ids, shape, token_type_embeddings.shape[0], "token_type_embeddings")
    op.ids("position_ids", position_ids, shape, positions, "position_embeddings")
    fan_in = emb * (3 if trigram else 1)
    if transformation_weight is not None:
        op.shape("transformation_weight", transformation_weight, (hidden, fan_in),
                 " (hidden, 3 × embedding with trigram input, else embedding)")
        op.shape("transformation_bias", transformation_bias, (hidden,), " (hidden)", optional=True)
    elif fan_in != hidden:
        op.fail("transformation_weight", f"a tensor of shape ({hidden}, {fan_in}) (the embeddings are {fan_in} wide, "
                f"the hidden size {hidden})", "None")
    op.shape("norm_weight", norm_weight, (hidden,), " (hidden)")
    op.shape("norm_bias", norm_bias, (hidden,), " (hidden)")
    if padding_idx is not None and not 0 <= padding_idx < vocab:
        op.fail("padding_idx", f"None or a row of word_embeddings in [0, {vocab})", padding_idx)


class _InLayer(_Op):
    """An encoder layer's checks, naming the layer: `weights[layer 1] key_weight: expected ...`."""

    __slots__ = ("layer",)

    def __init__(self, name: str, layer: int):
        super().__init__(name)
        self.layer = layer

    def fail(self, arg, expected: str, got) -> None:
        super().fail(f"weights[layer {self.layer}] {_label(arg)}", expected, got)

    def fail_type(self, arg, expected: str, got) -> None:
        super().fail_type(f"weights[layer {self.layer}] {_label(arg)}", expected, got)


ATTENTION_WEIGHTS = 18  # bottleneck_attention's weight arguments, in its order


def encoder_weights_per_layer(num_ffn: int) -> int:
    """The encoder's flat weight list per layer: bottleneck_attention's 18, then per FFN
    [W1, b1, W2, b2, norm_weight, norm_bias], then the output bottleneck [W, b, norm_weight, norm_bias]."""
    return ATTENTION_WEIGHTS + 6 * num_ffn + 4


class WeightSet:
    """What holds of a checked encoder weight set while it is unchanged (the value `_derived.derived`
    keeps for it): whether every weight is float32, and `prepared`, what a kernel built from the set,
    by the kernel's key (the CPU kernel's per-layer arguments, per ISA). It holds no tensor of the set."""

    __slots__ = ("float32", "prepared")

    def __init__(self, float32: bool):
        self.float32 = float32
        self.prepared: dict = {}


class CheckedWeights(list):
    """The encoder's weight list as `check` hands it on: the same tensors, and `known`, their
    `WeightSet`. The kernel reads what it built from `known` instead of looking the set up again
    (a lookup stamps every tensor: 46 a layer)."""

    __slots__ = ("known",)


def _encoder(op, h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck):
    """h and the key mask on every call; the weight list (every layer checked as the three ops it runs
    would check it; an empty tensor = None) once per weight set: at 24 layers it is 1104 tensors, and
    a model passes the same ones every call (`_derived.py`). Returns the arguments with the weight
    list as `CheckedWeights`."""
    op.dims("h", h, 3, "[batch, sequence, hidden]")
    _common(op, _ENCODER_ACTIVATIONS, (h, key_mask))
    op.key_mask(key_mask, h.shape[0], h.shape[1])
    n = len(ffn_eps)
    if n == 0:
        op.fail("ffn_eps", "one eps per FFN (at least one)", "an empty list")
    per = encoder_weights_per_layer(n)
    if num_layers < 1 or len(weights) != num_layers * per:
        op.fail("weights", f"{per} tensors per layer x {num_layers} layers", len(weights))
    op.choice("act", act, ACTS)
    present = [t if t.numel() else None for t in weights]
    key = ("encoder weights checked", h.shape[2], h.dtype, h.device, torch.is_autocast_enabled(h.device.type),
           num_layers, num_heads, mode, norm, eps, tuple(ffn_eps), use_bottleneck)
    checked = CheckedWeights(weights)
    checked.known = _derived.derived(key, present, lambda: _encoder_weights(
        op, h, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck))
    return (h, key_mask, checked, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck)


def _encoder_weights(op, h, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps,
                     use_bottleneck) -> WeightSet:
    h = h[:0]  # the weights' checks read h's width, dtype and device only
    _common(op, _ENCODER_WEIGHTS, (h, weights))
    present = [t if t.numel() else None for t in weights]
    n, per, hidden = len(ffn_eps), encoder_weights_per_layer(len(ffn_eps)), h.shape[2]
    for layer in range(num_layers):
        w = present[layer * per:(layer + 1) * per]
        lop = _InLayer(op.name, layer)
        _bottleneck_attention(lop, h, None, *w[:ATTENTION_WEIGHTS], num_heads, mode, norm, eps, 0.0, 0.0, None,
                              False)
        width = w[14].shape[0]  # the attention block's output width (output_weight's rows)
        a = h.new_empty((0, width))
        f = w[ATTENTION_WEIGHTS:ATTENTION_WEIGHTS + 6 * n]
        if any(t is None for t in f):
            lop.fail("FFN weights", "tensors (no FFN weight may be absent)", "an empty tensor")
        _ffn_stack(lop, a, *(list(f[j::6]) for j in range(6)), act, norm, ffn_eps, 0.0, None)
        if use_bottleneck:
            _linear_norm(lop, a, *w[-4:], h.new_empty((0, hidden)), norm, eps, 0.0, None)
            if w[-4].shape[0] != hidden:
                lop.fail("output bottleneck weight", f"{hidden} rows (h's last dim)", tuple(w[-4].shape))
        elif width != hidden:
            op.fail("use_bottleneck", f"True (the attention width {width} differs from h's {hidden})", False)
    return WeightSet(float32=all(t is None or t.dtype == torch.float32 or int8.form(t) is not None for t in present))


_CHECKS = {"nonorm": _nonorm, "layernorm": _nonorm, "linear_norm": _linear_norm, "attention": _attention,
           "bottleneck_attention": _bottleneck_attention, "ffn_stack": _ffn_stack, "embedding": _embedding,
           "encoder": _encoder}


class Signature:
    """An op's argument names and where its tensors are: (index, name, is a list, holds integers)."""

    def __init__(self, schema_args: str):
        parts = [part.split() for part in schema_args.split(",")]
        self.names = tuple(p[-1] for p in parts)
        self.tensors = tuple((i, p[-1], p[0].startswith("Tensor[]"), p[-1] in _INTEGER)
                             for i, p in enumerate(parts) if p[0].startswith("Tensor"))


_ENCODER_ACTIVATIONS = Signature("Tensor h, Tensor? key_mask")
_ENCODER_WEIGHTS = Signature("Tensor h, Tensor[] weights")


def check(name: str, signature: Signature, args) -> tuple:
    """Raise if `args` (the op's positional arguments) are not what op `name` accepts; else return
    them as the kernels take them (the same, but for the encoder's `CheckedWeights`)."""
    op = _Op(name)
    if name != "encoder":  # the encoder checks its weight list once per weight set (_encoder)
        _common(op, signature, args)
    specific = _CHECKS.get(name)
    checked = specific(op, *args) if specific is not None else None
    return tuple(args) if checked is None else checked


def check_devices_and_dtypes(name: str, signature: Signature, args) -> None:
    """The checks that need no data (for fake tensors: a CPU tensor beside a meta one dispatches to the
    fake implementation, not to the op)."""
    _common(_Op(name), signature, args, fake=True)
