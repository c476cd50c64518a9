"""Helpers the whole test suite (and the benchmarks) share: the error metric and realistic weights."""

from __future__ import annotations

import torch
from torch import nn

from mbkernels.modeling import MobileBertEmbeddings, MobileBertLayer, NoNorm


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Per-row relative error: `max_rows ‖out−ref‖ / max(‖ref_row‖, 1e-6·max_row ‖ref‖)`.

    Rows are the last dimension. MobileBERT's activations span 1e-1..1e7 across tokens: a global
    norm would let one [CLS] row at 2.5e7 hide errors in the others, and the floor keeps all-zero
    rows (unused embedding rows' gradients) from dividing by zero.
    """
    if out.shape != ref.shape:
        raise ValueError(f"rel_err: shapes differ, out {tuple(out.shape)} vs ref {tuple(ref.shape)}")
    if ref.numel() == 0:
        return 0.0
    out = out.detach().to(torch.float64).reshape(-1, ref.shape[-1] if ref.dim() else 1)
    ref = ref.detach().to(torch.float64).reshape(out.shape)
    ref_norm = ref.norm(dim=1)
    floor = max(float(ref_norm.max()) * 1e-6, torch.finfo(torch.float64).tiny)
    err = (out - ref).norm(dim=1) / ref_norm.clamp_min(floor)
    return float(err.max())


def realistic_init_(model: nn.Module, seed: int = 0, outliers: int = 8, scale: float = 2e4,
                    cls_boost: float = 30.0, growth: float = 1.12, layer_outliers: int = 0) -> nn.Module:
    """Weights whose activations reach the 1e5–1e7 range the released checkpoint shows.

    No real MobileBERT weights install offline, so this imitates what the trained model does: a few
    "outlier" channels of the 512-wide stream carry huge values (the NoNorm scale of the embeddings
    sets them, each layer's output NoNorm grows them by `growth`), the [CLS] position is larger still,
    and the bottleneck projections read those channels with small weights so the 128-wide interior
    stays finite. Everything else is HF's normal(0, initializer_range) init. `layer_outliers` > 0:
    each layer's output NoNorm also lifts that many channels of its own (drawn per layer) by `scale`,
    so the outlier set differs from layer to layer (the later layers read those columns scaled down
    too); 0 keeps one set for every layer, and the same weights as before the option existed.
    """
    g = torch.Generator().manual_seed(seed)
    hidden = next(m for m in model.modules() if isinstance(m, MobileBertEmbeddings)).config.hidden_size
    chans = torch.randperm(hidden, generator=g)[:outliers]
    large = chans  # the channels that are large at the next layer's input
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MobileBertEmbeddings):
                if isinstance(m.LayerNorm, NoNorm):
                    w = m.LayerNorm.weight
                    w.copy_(1.0 + 0.1 * torch.randn(w.shape, generator=g))
                    w[chans] = (scale * (1.0 + torch.rand(outliers, generator=g))).to(w.dtype)
                m.position_embeddings.weight[0, chans] = cls_boost * m.position_embeddings.weight[0, chans].sign()
            elif isinstance(m, MobileBertLayer):
                for lin in _stream_readers(m):
                    lin.weight[:, large] /= scale
                out_norm = m.output.bottleneck.LayerNorm if hasattr(m.output, "bottleneck") else None
                if isinstance(out_norm, NoNorm):
                    w = out_norm.weight
                    w.copy_(1.0 + 0.05 * torch.randn(w.shape, generator=g))
                    w[large] = growth
                    if layer_outliers > 0:
                        new = torch.randperm(hidden, generator=g)[:layer_outliers]
                        new = new[~torch.isin(new, large)]
                        w[new] = scale
                        large = torch.cat([large, new])
    return model


def _stream_readers(layer: MobileBertLayer) -> list[nn.Linear]:
    """The Linears of a layer that read the 512-wide stream."""
    readers = []
    bottleneck = getattr(layer, "bottleneck", None)
    if bottleneck is not None:
        readers.append(bottleneck.input.dense)
        if hasattr(bottleneck, "attention"):
            readers.append(bottleneck.attention.dense)
    sa = layer.attention.self
    for lin in (sa.query, sa.key, sa.value):
        if lin.in_features == layer.config.hidden_size:
            readers.append(lin)
    return readers
