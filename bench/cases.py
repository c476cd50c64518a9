"""The benchmark cases: every public op at MobileBERT's sizes, one MobileBertLayer, the whole
MobileBertModel (default preset), a whole fine-tuning step with AdamW, and each op's call overhead
(the public op against its C++ kernel called directly). Weights use `mbkernels.testing.realistic_init_`
(activations at the 1e5-1e7 scale of the released checkpoint), except fp16, where those activations
overflow and plain random init is used.

Adding a case is one function:

    @case("my_case", kind="step", providers=("fused", "reference"), modes=("train",))
    def my_case(spec: Spec) -> Workload:
        ...build weights and inputs for spec.batch x spec.seq on spec.device in spec.dtype...
        return Workload(flops=..., providers={"fused": Provider(prepare=lambda: my_step), ...})

where `prepare()` does everything that must stay out of the timed region and returns the step
(`forward_step` makes one from a forward function for either mode).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.harness import (INT8_DTYPES, INT8_WEIGHT_BITS, MODULE_PROVIDERS, OP_PROVIDERS, ORT_INFO, ORT_INT8_INFO,
                           Provider, Spec, UpstreamGrads, Workload, case, compile_hf, compile_info, compiled, first,
                           float_leaves, forward_step, leaf_copies, ort_session)
from mbkernels import MobileBertConfig, MobileBertModel, flops, patch_hf, use_backend
from mbkernels.testing import realistic_init_

import op_cases  # noqa: E402  tests/op_cases.py (on sys.path through bench.harness): the op tests' builders

CONFIG = MobileBertConfig.mobilebert()
SMOKE_LAYERS = 2


def total_flops(spec: Spec, forward: int) -> int:
    return flops.training(forward) if spec.mode == "train" else forward


# -- ops ---------------------------------------------------------------------------------------------

def op_workload(spec: Spec, built: tuple, forward_flops: int, shape: str) -> Workload:
    """Providers of an op: fused (the custom op), reference (eager torch), torch.compile of the reference."""
    fn, args, kwargs = built
    args, int8_owners = int8_weights(spec, leaf_copies(args, spec.device))
    leaves, grads = float_leaves(args), UpstreamGrads()

    def step_of(f):  # the default argument keeps the int8 weights' owners alive with the step
        return lambda owners=int8_owners: forward_step(spec, lambda: f(*args, **kwargs), leaves, grads)

    def expected(owners=int8_owners):
        with use_backend("reference"), torch.inference_mode():
            return first(fn(*args, **kwargs))

    providers = {
        "fused": Provider(step_of(fn)),
        "reference": Provider(step_of(fn), backend="reference"),
        "compile": Provider(lambda: step_of(compiled(fn, fullgraph=True))(), backend="reference",
                            info={"compile": "torch.compile(reference op, dynamic=False, fullgraph=True)"}),
    }
    return Workload(total_flops(spec, forward_flops), providers, expected, {"shape": shape})


@case("nonorm", kind="op", providers=OP_PROVIDERS)
def nonorm(spec: Spec) -> Workload:
    b, s, n = spec.batch, spec.seq, CONFIG.hidden_size
    built = op_cases.nonorm_case(b, s, n, residual=True, dtype=spec.torch_dtype)
    return op_workload(spec, built, flops.nonorm(b, s, n), f"(x + r) * w + b, x [B, S, {n}]")


# The ops whose GEMMs run int8 too (CPU inference): the grid's dtypes plus int8 and int8w7.
GEMM_OP_DTYPES = ("fp32", "bf16", "fp16", *INT8_DTYPES)


def int8_weights(spec: Spec, args: tuple) -> tuple[tuple, list]:
    """For the int8 dtypes, an op's Linear weights (its 2-D float tensors, alone or in lists)
    quantized as `mbkernels.quantize` does (per output channel; 7-bit for int8w7), and the
    Int8Linears that hold their scales (ops/int8.py refers to them weakly: the caller keeps them)."""
    from mbkernels.quantize import Int8Linear

    owners: list = []
    if spec.dtype not in INT8_DTYPES:
        return args, owners

    def quantized(t):
        if isinstance(t, list):
            return [quantized(e) for e in t]
        if not (isinstance(t, torch.Tensor) and t.dim() == 2 and t.is_floating_point()):
            return t
        linear = torch.nn.Linear(t.shape[1], t.shape[0], bias=False)
        linear.weight.data = t.detach().float()
        owners.append(Int8Linear.from_linear(linear, weight_bits=INT8_WEIGHT_BITS[spec.dtype]))
        return owners[-1].weight

    return tuple(quantized(a) for a in args), owners


@case("linear_norm", kind="op", providers=OP_PROVIDERS, dtypes=GEMM_OP_DTYPES)
def linear_norm(spec: Spec) -> Workload:
    # The output bottleneck: the last op of every layer.
    b, s, k, n = spec.batch, spec.seq, CONFIG.true_hidden_size, CONFIG.hidden_size
    return op_workload(spec, op_cases.linear_norm_case(b, s, k, n, residual=True, dtype=spec.torch_dtype),
                       flops.linear_norm(b * s, k, n), f"NoNorm(x W^T + b + r), {k} -> {n}")


@case("bottleneck_attention", kind="op", providers=OP_PROVIDERS)
def bottleneck_attention(spec: Spec) -> Workload:
    c, b, s = CONFIG, spec.batch, spec.seq
    built = op_cases.bottleneck_attention_case(b, s, c.hidden_size, c.intra_bottleneck_size, c.num_attention_heads,
                                               mode=c.attention_mode, return_scores=False, dtype=spec.torch_dtype)
    return op_workload(spec, built, flops.bottleneck_attention(b, s, c.hidden_size, c.intra_bottleneck_size,
                                                               c.num_attention_heads, c.attention_mode),
                       f"mode {c.attention_mode}, {c.hidden_size} -> {c.intra_bottleneck_size}, "
                       f"{c.num_attention_heads} heads, padded key mask")


@case("attention", kind="op", providers=OP_PROVIDERS + ("sdpa",))
def attention(spec: Spec) -> Workload:
    c, b, s = CONFIG, spec.batch, spec.seq
    h, d = c.num_attention_heads, c.attention_head_size
    built = op_cases.attention_case(b, h, s, d, return_scores=False, dtype=spec.torch_dtype)
    w = op_workload(spec, built, flops.attention(b, h, s, d), f"[B, {h}, S, {d}], padded key mask")
    _, args, _ = built
    q, k, v, key_mask = leaf_copies(args, spec.device)  # sdpa's own leaves: same values
    mask = key_mask[:, None, None, :]
    w.providers["sdpa"] = Provider(lambda: forward_step(
        spec, lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), [q, k, v], UpstreamGrads()),
        info={"sdpa": "F.scaled_dot_product_attention, bool mask"})
    return w


@case("ffn_stack", kind="op", providers=OP_PROVIDERS, dtypes=GEMM_OP_DTYPES)
def ffn_stack(spec: Spec) -> Workload:
    c, b, s = CONFIG, spec.batch, spec.seq
    built = op_cases.ffn_stack_case(b, s, c.true_hidden_size, c.intermediate_size, c.num_feedforward_networks,
                                    dtype=spec.torch_dtype)
    return op_workload(spec, built, flops.ffn_stack(b * s, c.true_hidden_size, c.intermediate_size,
                                                    c.num_feedforward_networks),
                       f"{c.num_feedforward_networks} x ({c.true_hidden_size} -> {c.intermediate_size} -> "
                       f"{c.true_hidden_size})")


@case("embedding", kind="op", providers=OP_PROVIDERS)
def embedding(spec: Spec) -> Workload:
    c, b, s = CONFIG, spec.batch, spec.seq
    built = op_cases.embedding_case(b, s, c.vocab_size, c.embedding_size, c.hidden_size, trigram=c.trigram_input,
                                    dtype=spec.torch_dtype)
    return op_workload(spec, built, flops.embedding(b * s, c.embedding_size, c.hidden_size, c.trigram_input),
                       f"trigram {3 * c.embedding_size} -> {c.hidden_size}, vocab {c.vocab_size}")


# -- layer and model ---------------------------------------------------------------------------------

@dataclasses.dataclass
class _Models:
    """Our model and its Hugging Face twin (same weights), shared by the points of one case/device/dtype."""

    key: tuple
    ours: MobileBertModel
    _hf: torch.nn.Module | None = None

    @property
    def hf(self) -> torch.nn.Module:
        if self._hf is None:
            from helpers import hf_twin  # tests/helpers.py

            twin = hf_twin(self.ours, "MobileBertModel")
            twin.set_attn_implementation("sdpa")  # HF's default (hf_twin picks eager for attention outputs)
            self._hf = twin.to(self.ours.embeddings.position_ids.device)
        return self._hf


_models: list[_Models] = []


def models(spec: Spec, layers: int) -> _Models:
    key = (spec.case, spec.device, spec.dtype, layers)
    if not _models or _models[0].key != key:
        _models.clear()
        config = dataclasses.replace(CONFIG, num_hidden_layers=layers)
        ours = MobileBertModel(config)
        if spec.dtype != "fp16":
            realistic_init_(ours)
        _models.append(_Models(key, ours.to(spec.device, spec.torch_dtype)))
    m = _models[0]
    m.ours.train(spec.mode == "train")
    if m._hf is not None:
        m._hf.train(spec.mode == "train")
    return m


def _ids(spec: Spec, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-length sequences (attention mask all ones): every provider gets the same tensors."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (spec.batch, spec.seq), generator=g).to(spec.device)
    return ids, torch.ones_like(ids)


def module_providers(spec: Spec, ours_forward, ours_params, hf_module, hf_forward, export) -> dict[str, Provider]:
    """fused / reference run our module; hf and compile run the HF twin; ort runs its ONNX export.

    hf_module() returns the HF twin (built on first use), hf_forward(module) calls it or a compiled
    copy of it, export() returns (module, args, input names) for the ONNX export.
    """
    grads = UpstreamGrads()
    whole_model = spec.case == "model"

    def ours_step():
        return forward_step(spec, ours_forward, ours_params, grads)

    def hf_step():
        hf = hf_module()
        return forward_step(spec, lambda: hf_forward(hf), list(hf.parameters()), grads)

    def compile_step():
        target = compile_hf(hf_module(), whole_model)
        return forward_step(spec, lambda: hf_forward(target), list(target.parameters()), grads)

    def ort_step():
        session, feeds = ort_session(*export())
        return lambda: session.run(None, feeds)[0]

    hf_info = {"hf_attn_implementation": "sdpa"}
    return {
        "fused": Provider(ours_step),
        "reference": Provider(ours_step, backend="reference"),
        "hf": Provider(hf_step, info=hf_info),
        "compile": Provider(compile_step, info={"compile": compile_info(whole_model), **hf_info}),
        "ort": Provider(ort_step, info=dict(ORT_INFO)),
    }


class _LastHidden(torch.nn.Module):
    """HF model -> last_hidden_state, the tensor exported to ONNX."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _LayerWithMask(torch.nn.Module):
    """HF layer with its (prepared) attention mask bound, the module exported to ONNX."""

    def __init__(self, layer: torch.nn.Module, mask):
        super().__init__()
        self.layer, self.mask = layer, mask

    def forward(self, hidden_states):
        return first(self.layer(hidden_states, attention_mask=self.mask))


@case("layer", kind="layer", providers=MODULE_PROVIDERS)
def layer(spec: Spec) -> Workload:
    from transformers.masking_utils import create_bidirectional_mask

    m = models(spec, layers=1)
    ids, mask = _ids(spec, CONFIG.vocab_size)
    with torch.no_grad():
        h = m.ours.embeddings(ids).detach()  # realistic inputs: the embeddings' output
    h.requires_grad_(spec.mode == "train")
    key_mask = mask.bool()
    ours = m.ours.encoder.layer[0]

    @functools.cache
    def hf_mask():
        """What HF's model hands its layers (None for sdpa without padding): prepared once."""
        return create_bidirectional_mask(config=m.hf.config, inputs_embeds=h, attention_mask=mask)

    def hf_module():
        hf_mask()
        return m.hf.encoder.layer[0]

    def hf_forward(layer_module):
        return layer_module(h, attention_mask=hf_mask())

    def export():
        return _LayerWithMask(hf_module(), hf_mask()).eval(), (h.detach(),), ["hidden_states"]

    def expected():
        with use_backend("reference"), torch.inference_mode():
            return first(ours(h, key_mask))

    providers = module_providers(spec, lambda: ours(h, key_mask), [*ours.parameters(), h], hf_module, hf_forward,
                                 export)
    c = CONFIG
    return Workload(total_flops(spec, flops.layer(c, spec.batch, spec.seq)), providers, expected,
                    {"shape": f"one MobileBertLayer (mobilebert preset), h [B, S, {c.hidden_size}]"})


@case("model", kind="model", providers=MODULE_PROVIDERS)
def model(spec: Spec) -> Workload:
    layers = SMOKE_LAYERS if spec.smoke else CONFIG.num_hidden_layers
    m = models(spec, layers)
    ids, mask = _ids(spec, CONFIG.vocab_size)
    ours = m.ours

    def ours_forward():
        return ours(ids, attention_mask=mask)

    def hf_forward(hf):
        return hf(input_ids=ids, attention_mask=mask)

    def export():
        return _LastHidden(m.hf).eval(), (ids, mask), ["input_ids", "attention_mask"]

    def expected():
        with use_backend("reference"), torch.inference_mode():
            return first(ours_forward())

    providers = module_providers(spec, ours_forward, list(ours.parameters()), lambda: m.hf, hf_forward, export)
    return Workload(total_flops(spec, flops.model(ours.config, spec.batch, spec.seq)), providers, expected,
                    {"layers": layers, "shape": f"MobileBertModel (mobilebert preset, {layers} layers), ids [B, S]"})


@case("model_hf_patched", kind="model", providers=("fused", "hf"))
def model_hf_patched(spec: Spec) -> Workload:
    """The "model" point's HF twin patched in place by `mbkernels.patch_hf` (as "fused") next to the
    same HF model unpatched ("hf"): what a transformers user gets from one call."""
    whole = model(spec)
    m = models(spec, whole.info["layers"])
    ids, mask = _ids(spec, CONFIG.vocab_size)

    def patched_step():
        patched = patch_hf(copy.deepcopy(m.hf))
        return forward_step(spec, lambda: patched(input_ids=ids, attention_mask=mask), list(patched.parameters()),
                            UpstreamGrads())

    providers = {"fused": Provider(patched_step, info={"fused": "transformers MobileBertModel + mbkernels.patch_hf"}),
                 "hf": whole.providers["hf"]}
    return Workload(whole.flops, providers, whole.expected, {**whole.info, "shape": "HF MobileBertModel "
                    f"(mobilebert preset, {whole.info['layers']} layers) patched by mbkernels.patch_hf, ids [B, S]"})


@case("model_int8", kind="model", providers=("fused", "ort"), modes=("infer",), devices=("cpu",),
      dtypes=INT8_DTYPES, sizes=((1, 128), (8, 128), (32, 128)))
def model_int8(spec: Spec) -> Workload:
    """The "model" point's weights in int8: ours quantized by `mbkernels.quantize` (SmoothQuant
    calibrated on 4 random batches of 128 tokens) against the HF twin exported to ONNX and quantized by
    ONNX Runtime; int8w7: 7-bit weights on both sides (`weight_bits=7`, ORT's `reduce_range`). The
    output check is against the float32 model's reference: what int8 costs."""
    from mbkernels import quantize

    fp32_spec = dataclasses.replace(spec, dtype="fp32")
    fp32 = model(fp32_spec)
    m = models(fp32_spec, fp32.info["layers"])  # the weights fp32's point built
    ids, mask = _ids(spec, CONFIG.vocab_size)
    g = torch.Generator().manual_seed(1)
    calibration = [torch.randint(1, CONFIG.vocab_size, (4, 128), generator=g) for _ in range(4)]
    bits = INT8_WEIGHT_BITS[spec.dtype]

    def fused_step():
        int8_model = quantize(copy.deepcopy(m.ours), calibration, weight_bits=bits)
        return forward_step(spec, lambda: int8_model(ids, attention_mask=mask), [], UpstreamGrads())

    def ort_step():
        session, feeds = ort_session(_LastHidden(m.hf).eval(), (ids, mask), ["input_ids", "attention_mask"],
                                     int8=True, reduce_range=bits == 7)
        return lambda: session.run(None, feeds)[0]

    providers = {
        "fused": Provider(fused_step, info={"fused": f"mbkernels.quantize(model, calibration, weight_bits={bits}), "
                                                     "smooth_alpha 0.3"}),
        "ort": Provider(ort_step, info={**ORT_INT8_INFO, **({"ort_reduce_range": "True"} if bits == 7 else {})}),
    }
    return Workload(fp32.flops, providers, fp32.expected, {**fp32.info, "shape": "MobileBertModel (mobilebert "
                    f"preset, {fp32.info['layers']} layers), int8 Linears, ids [B, S]"})


# -- a whole fine-tuning step ------------------------------------------------------------------------

# What a user fine-tuning waits for per batch: zero_grad, forward with labels, the loss's backward and
# the optimizer step, of MobileBertForSequenceClassification (24 layers) and its HF twin, each with
# torch's AdamW at the same hyperparameters. `fused=True` (torch's fused CPU/CUDA kernel) for every
# provider: it is the fastest AdamW torch has on both devices, and ours uses it.
FINETUNE_SIZES = ((1, 128), (8, 128), (32, 64))
ADAMW = {"lr": 2e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "fused": True}


def _finetune_step(model: torch.nn.Module, ids, mask, labels, sync) -> Callable[[], torch.Tensor]:
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        if sync:
            sync()
        return loss

    return step


@case("finetune_step", kind="step", providers=("fused", "hf", "compile"), modes=("train",), sizes=FINETUNE_SIZES,
      dtypes=("fp32",))
def finetune_step(spec: Spec) -> Workload:
    """One fine-tuning step of MobileBertForSequenceClassification (mobilebert preset, 2 labels) on
    full-length sequences; every provider starts from the same weights (a fresh copy each)."""
    from helpers import hf_twin  # tests/helpers.py

    from mbkernels import MobileBertForSequenceClassification

    layers = SMOKE_LAYERS if spec.smoke else CONFIG.num_hidden_layers
    config = dataclasses.replace(CONFIG, num_hidden_layers=layers, num_labels=2)
    torch.manual_seed(0)
    ours = MobileBertForSequenceClassification(config)
    realistic_init_(ours)
    ours.to(spec.device).train()
    ids, mask = _ids(spec, config.vocab_size)
    labels = torch.randint(0, 2, (spec.batch,), generator=torch.Generator().manual_seed(2)).to(spec.device)
    sync = torch.cuda.synchronize if spec.device == "cuda" else None

    def hf_model():
        twin = hf_twin(ours, "MobileBertForSequenceClassification")
        twin.set_attn_implementation("sdpa")  # HF's default
        return twin.to(spec.device).train()

    def compiled_hf():
        twin = hf_model()
        return compile_hf(twin, whole_model=True)

    info = {"optimizer": "torch.optim.AdamW(" + ", ".join(f"{k}={v}" for k, v in ADAMW.items()) + ")",
            "hf_attn_implementation": "sdpa"}
    providers = {
        "fused": Provider(lambda: _finetune_step(copy.deepcopy(ours), ids, mask, labels, sync), info=info),
        "hf": Provider(lambda: _finetune_step(hf_model(), ids, mask, labels, sync), info=info),
        "compile": Provider(lambda: _finetune_step(compiled_hf(), ids, mask, labels, sync),
                            info={**info, "compile": compile_info(True)}),
    }
    forward = flops.model(config, spec.batch, spec.seq) + 2 * spec.batch * config.hidden_size * config.num_labels
    return Workload(flops.training(forward), providers, None,
                    {"layers": layers, "shape": f"MobileBertForSequenceClassification (mobilebert preset, {layers} "
                     "layers, 2 labels): zero_grad, forward with labels, backward, AdamW step; ids [B, S]"})


# -- per-op call overhead ----------------------------------------------------------------------------

# What a public op costs beyond its kernel: the Python function, the finite-check hook, the custom op's
# dispatch and the backend choice, at a size where the kernel itself takes microseconds. `fused` is the
# public op, `kernel` its C++ kernel function called directly on inputs prepared outside the timed
# region (bench/kernel_calls.py, the one file that follows the binding); the report's overhead table
# is fused - kernel in µs. Inference only, fp32, CPU, MobileBERT's widths at batch 1 x sequence 8.
OVERHEAD_SIZE = (1, 8)


def _detached(args):
    if isinstance(args, (list, tuple)):
        return type(args)(_detached(a) for a in args)
    return args.detach() if isinstance(args, torch.Tensor) else args


def _encoder_built(b: int, s: int):
    """ops.encoder's arguments for one MobileBERT layer, as MobileBertEncoder passes them; h is the
    embeddings' output (activations at the released checkpoint's scale)."""
    from mbkernels import ops

    c = dataclasses.replace(CONFIG, num_hidden_layers=1)
    model = MobileBertModel(c).eval()
    realistic_init_(model)
    ids = torch.randint(1, c.vocab_size, (b, s), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), use_backend("reference"):  # inputs only: the op under test is the encoder
        h = model.embeddings(ids)
    key_mask = torch.ones(b, s, dtype=torch.bool)
    weights = [t.detach() for t in model.encoder.layer[0].encoder_weights(h.new_empty(0))]
    ffn_eps = [c.layer_norm_eps] * (c.num_feedforward_networks - 1) + [1e-5]
    args = (h, key_mask, weights, 1, c.num_attention_heads, c.attention_mode, c.norm, c.hidden_act,
            c.layer_norm_eps, ffn_eps, c.use_bottleneck)
    return ops.encoder, args, {}


OVERHEAD_BUILDERS = {
    "nonorm": lambda b, s: op_cases.nonorm_case(b, s, CONFIG.hidden_size, residual=True),
    "layernorm": lambda b, s: op_cases.layernorm_case(b, s, CONFIG.hidden_size, residual=True),
    "linear_norm": lambda b, s: op_cases.linear_norm_case(b, s, CONFIG.true_hidden_size, CONFIG.hidden_size,
                                                          residual=True),
    "bottleneck_attention": lambda b, s: op_cases.bottleneck_attention_case(
        b, s, CONFIG.hidden_size, CONFIG.intra_bottleneck_size, CONFIG.num_attention_heads,
        mode=CONFIG.attention_mode, return_scores=False),
    "attention": lambda b, s: op_cases.attention_case(b, CONFIG.num_attention_heads, s, CONFIG.attention_head_size,
                                                      return_scores=False),
    "ffn_stack": lambda b, s: op_cases.ffn_stack_case(b, s, CONFIG.true_hidden_size, CONFIG.intermediate_size,
                                                      CONFIG.num_feedforward_networks),
    "embedding": lambda b, s: op_cases.embedding_case(b, s, CONFIG.vocab_size, CONFIG.embedding_size,
                                                      CONFIG.hidden_size, trigram=CONFIG.trigram_input),
    "encoder": _encoder_built,
}


def overhead_workload(spec: Spec, op: str) -> Workload:
    from bench import kernel_calls  # imported per point: a binding without this op fails only its points

    fn, args, kwargs = OVERHEAD_BUILDERS[op](spec.batch, spec.seq)
    args = _detached(args)
    grads = UpstreamGrads()

    def expected():
        with use_backend("reference"), torch.inference_mode():
            return first(fn(*args, **kwargs))

    providers = {
        "fused": Provider(lambda: forward_step(spec, lambda: fn(*args, **kwargs), [], grads),
                          info={"fused": f"mbkernels.ops.{op}"}),
        # prepare() packs weights and allocates outputs; the step is the kernel call alone.
        "kernel": Provider(lambda: forward_step(spec, kernel_calls.KERNEL_CALLS[op](args, kwargs), [], grads),
                           info={"kernel": kernel_calls.DESCRIPTION}),
    }
    return Workload(0, providers, expected, {"shape": f"mbkernels.ops.{op} at MobileBERT's widths, "
                                                      f"B×S {spec.batch}×{spec.seq}"})


def _overhead_case(op: str):
    def build(spec: Spec) -> Workload:
        return overhead_workload(spec, op)

    build.__name__ = build.__qualname__ = f"overhead_{op}"
    case(build.__name__, kind="overhead", providers=("fused", "kernel"), modes=("infer",), devices=("cpu",),
         sizes=(OVERHEAD_SIZE,), dtypes=("fp32",))(build)


for _op in OVERHEAD_BUILDERS:
    _overhead_case(_op)
