"""int8 inference: `quantize(model, calibration=...)` turns a model's encoder Linears into `Int8Linear`s.

The scheme (the kernels' definition: csrc/core/gemm/gemm.h, "int8"; `ops.reference.int8_linear`):
- weights int8, symmetric per output channel: weight = round(W / scale), scale = max|W_row| / qmax,
  qmax = 127, or 63 with `weight_bits=7`, which AVX2 CPUs without VNNI run on a faster kernel
  (vpmaddubsw, whose int16 pair sums saturate beyond 7-bit weights; csrc/core/gemm/gemm.h);
- activations quantized dynamically per row (token) as the GEMM reads them, so one [CLS] row at 1e7
  does not crush the others; int32 sums; dequantization, bias, activation, residual and norm in
  fp32 in the kernels' epilogues;
- optionally SmoothQuant on the Linears that read a layer's input h, where NoNorm leaves a few
  channels 1e3-1e5 times larger than the rest in every token: with calibration batches, h's
  per-channel range max|h_k| sets s_k = max|h_k|^alpha / max|W_k|^(1 - alpha) over those Linears'
  columns; the weight columns are multiplied by s_k before quantization and the activations by
  `input_smooth` = 1 / s_k inside the row quantization (no extra pass).

Attention scores and probabilities, the embeddings and the heads stay fp32. A quantized model runs
inference only (a gradient through it is an error). `save_pretrained` writes the int8 weights with
their float32 `weight_scale` (and `input_smooth`) and the settings in config.json
(`quantization_config`, `quant_method` "mbkernels-int8" and a format version), which
`from_pretrained` reads back. transformers' own `from_pretrained` refuses such a folder: it knows no
quantizer of that name.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from mbkernels.ops import int8, reference

FORMAT = "mbkernels-int8"  # config.json's quantization_config.quant_method
VERSION = 1


class Int8Linear(nn.Module):
    """A Linear whose weight is int8 [out, in] with `weight_scale` [out] (W ≈ weight * scale) and
    optional `input_smooth` [in]; bias float32 [out] or None. Its forward is the int8 definition
    (`reference.linear`); the ops run it in the int8 GEMM."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, smooth: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("input_smooth", torch.ones(in_features) if smooth else None)
        int8.register(self.weight, self)

    @classmethod
    def from_linear(cls, linear: nn.Linear, smooth: torch.Tensor | None = None, weight_bits: int = 8) -> Int8Linear:
        """`linear` quantized to `weight_bits`-bit weights (in [-qmax, qmax], qmax = 2^(bits-1) - 1);
        `smooth` [in] multiplies the activations (its inverse goes into W)."""
        qmax = weight_max(weight_bits)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, smooth is not None)
        with torch.no_grad():
            w = linear.weight.detach().float()
            if smooth is not None:
                q.input_smooth.copy_(smooth)
                w = w / smooth
            amax = w.abs().amax(1)
            scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
            q.weight.copy_(torch.round(w / scale[:, None]).clamp(-qmax, qmax).to(torch.int8))
            q.weight_scale.copy_(scale)
            if linear.bias is not None:
                q.bias.copy_(linear.bias.detach().float())
        return q.to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.linear(x, self.weight, self.bias)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        int8.register(self.weight, self)  # a conversion may have made a new Parameter
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, smooth={self.input_smooth is not None}")


def weight_max(weight_bits: int) -> int:
    """The largest |weight| of `weight_bits`-bit symmetric weights (7 or 8 bits)."""
    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits: expected 7 or 8, got {weight_bits!r}")
    return 2 ** (weight_bits - 1) - 1


def _layers(model: nn.Module) -> list[nn.Module]:
    from mbkernels.modeling import MobileBertLayer

    layers = [m for m in model.modules() if isinstance(m, MobileBertLayer)]
    if not layers:
        raise TypeError(f"model: expected a mbkernels MobileBERT model (with MobileBertLayer modules), "
                        f"got {type(model).__name__}")
    return layers


def linear_names(config) -> tuple[list[str], list[str]]:
    """A layer's Linears, as paths below the layer: (those that read the layer's input h, the rest)."""
    over_h, rest = [], []
    if config.use_bottleneck:
        over_h.append("bottleneck.input.dense")
    if config.attention_mode == "shared":
        over_h.append("bottleneck.attention.dense")
    qk = over_h if config.attention_mode in ("full", "none") else rest
    qk += ["attention.self.query", "attention.self.key"]
    (rest if config.attention_mode == "bottleneck" else over_h).append("attention.self.value")
    rest.append("attention.output.dense")
    ffns = [f"ffn.{i}." for i in range(config.num_feedforward_networks - 1)] + [""]
    rest += [f"{f}{part}.dense" for f in ffns for part in ("intermediate", "output")]
    if config.use_bottleneck:
        rest.append("output.bottleneck.dense")
    return over_h, rest


def _input_ranges(model: nn.Module, calibration: Iterable[Any], layers: list[nn.Module]) -> list[torch.Tensor]:
    """Per layer, max |h_k| over the calibration batches of the layer's input h ([hidden])."""
    ranges: list[torch.Tensor | None] = [None] * len(layers)
    backbone = getattr(model, model.base_model_prefix, model) if model.base_model_prefix else model
    with torch.inference_mode():
        for batch in calibration:
            kwargs = batch if isinstance(batch, dict) else {"input_ids": batch}
            kwargs = {k: v for k, v in kwargs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            hidden = backbone(**kwargs, output_hidden_states=True).hidden_states
            mask = kwargs.get("attention_mask")
            for i in range(len(layers)):
                h = hidden[i]
                if mask is not None:
                    h = h * mask[..., None].to(h.dtype)  # padding rows do not set the range
                r = h.abs().flatten(0, -2).amax(0)
                ranges[i] = r if ranges[i] is None else torch.maximum(ranges[i], r)
    if ranges[0] is None:
        raise ValueError("calibration: expected at least one batch, got none")
    for i, r in enumerate(ranges):
        if not torch.isfinite(r).all():
            raise ValueError(f"calibration: layer {i}'s input holds inf or NaN on these batches (the float32 model "
                             "overflows on them): no smoothing can be measured from them")
    return ranges


def quantize(model: nn.Module, calibration: Iterable[Any] | None = None, smooth_alpha: float | None = 0.3,
             weight_bits: int = 8, progress: bool = False) -> nn.Module:
    """Quantize `model`'s encoder Linears to int8 in place and return it (inference only from then on).

    `calibration`: batches of input ids ([B, S] tensors, or dicts with input_ids and attention_mask)
    from which SmoothQuant's per-channel ranges of each layer's input are measured; without it (or
    with `smooth_alpha=None`) no smoothing is applied. The default alpha, 0.3, was the best of 0.1-0.85
    on random tokens and beat 0.5 in 8 of 9 settings on real text (bench/results/issue18-int8-accuracy.md).
    `weight_bits`: 8, or 7 for the faster kernel
    of AVX2 CPUs without VNNI (the accuracy cost: bench/results/issue18-int8-accuracy.md)."""
    layers = _layers(model)
    weight_max(weight_bits)
    if model.config.quantization_config is not None:
        raise ValueError("model: expected a float32 model, got one already quantized "
                         f"({model.config.quantization_config.get('quant_method')})")
    if smooth_alpha is not None and not 0.0 <= smooth_alpha <= 1.0:
        raise ValueError(f"smooth_alpha: expected None or a float in [0, 1], got {smooth_alpha}")
    if calibration is None and smooth_alpha is not None:
        warnings.warn("quantize: no calibration batches, so no SmoothQuant: MobileBERT's outlier channels then cost "
                      "the small channels accuracy (measured: 56x the error on realistic weights); pass calibration "
                      "or smooth_alpha=None to silence this", stacklevel=2)
    alpha = smooth_alpha if calibration is not None else None
    ranges = _input_ranges(model, calibration, layers) if alpha is not None else [None] * len(layers)
    over_h, rest = linear_names(layers[0].config)
    iterator = layers
    if progress:
        from tqdm import tqdm

        iterator = tqdm(layers, desc="quantizing layers", unit="layer")
    for layer, h_range in zip(iterator, ranges):
        smooth = None
        if h_range is not None:
            w_range = torch.stack([layer.get_submodule(n).weight.detach().abs().amax(0) for n in over_h]).amax(0)
            s = h_range.float().clamp_min(1e-5) ** alpha / w_range.float().clamp_min(1e-5) ** (1 - alpha)
            smooth = 1.0 / s
        for name in over_h:
            _replace(layer, name, Int8Linear.from_linear(layer.get_submodule(name), smooth, weight_bits))
        for name in rest:
            _replace(layer, name, Int8Linear.from_linear(layer.get_submodule(name), None, weight_bits))
    model.config.quantization_config = settings(alpha, over_h + rest, weight_bits)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def settings(alpha: float | None, modules: list[str], weight_bits: int = 8) -> dict[str, Any]:
    """What config.json records of a quantized model (a folder without weight_bits has 8)."""
    return {"quant_method": FORMAT, "version": VERSION, "weights": "int8 symmetric per output channel",
            "weight_bits": weight_bits, "activations": "int8 dynamic per row", "smooth_alpha": alpha,
            "modules": list(modules)}


def _replace(layer: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, leaf, module)


def prepare_for_loading(model: nn.Module, settings: dict[str, Any]) -> None:
    """Give a freshly built float32 `model` the Int8Linear modules `settings` (config.json's
    quantization_config) describe, so that its state dict has the int8 checkpoint's keys and shapes."""
    if settings.get("quant_method") != FORMAT or settings.get("version") != VERSION:
        raise ValueError(f"config.json quantization_config: expected quant_method {FORMAT!r} version {VERSION} "
                         f"(the format this mbkernels reads), got quant_method {settings.get('quant_method')!r} "
                         f"version {settings.get('version')!r}")
    try:
        weight_max(settings.get("weight_bits", 8))
    except ValueError as e:
        raise ValueError(f"config.json quantization_config: {e}") from None
    layers = _layers(model)
    over_h, _ = linear_names(layers[0].config)
    smooth = settings.get("smooth_alpha") is not None
    for layer in layers:
        for name in settings["modules"]:
            try:
                linear = layer.get_submodule(name)
            except AttributeError:
                raise ValueError(f"config.json quantization_config: module {name!r} is not a Linear of this "
                                 "architecture's layers") from None
            _replace(layer, name, Int8Linear(linear.in_features, linear.out_features, linear.bias is not None,
                                             smooth and name in over_h))
    for p in model.parameters():
        p.requires_grad_(False)


def check_loaded(model: nn.Module) -> None:
    """A loaded int8 model's values: weights in [-qmax, qmax] of its weight_bits, scales finite and > 0,
    smoothing finite and > 0; ValueError naming the tensor (a malformed file would otherwise compute
    garbage)."""
    qmax = weight_max(model.config.quantization_config.get("weight_bits", 8))
    for name, m in model.named_modules():
        if not isinstance(m, Int8Linear):
            continue
        w = m.weight.flatten().to(torch.int16)  # int16: |-128| does not wrap
        if w.numel() and int(w.abs().max()) > qmax:
            bits = model.config.quantization_config.get("weight_bits", 8)
            raise ValueError(f"checkpoint tensor {name}.weight: expected int8 values in [-{qmax}, {qmax}] (weight_bits "
                             f"{bits}), got {int(w[w.abs().argmax()])}")
        for what, t in (("weight_scale", m.weight_scale), ("input_smooth", m.input_smooth)):
            if t is not None and not bool((torch.isfinite(t) & (t > 0)).all()):
                bad = t[~(torch.isfinite(t) & (t > 0))][0].item()
                raise ValueError(f"checkpoint tensor {name}.{what}: expected finite values > 0, got {bad}")
