"""Analytic FLOP counts of the ops, a layer and the model: what the benchmarks divide time by.

The convention is `torch.utils.flop_counter`'s: 2·M·N·K for every GEMM (the linears, QKᵀ and PV
of attention) and nothing for elementwise work (norms, softmax, ReLU, bias, residual, lookups),
so NoNorm counts 0 and a norm-only benchmark reports time, not GFLOP/s. tests/test_bench_harness.py
checks every function here against `FlopCounterMode` on the `reference` backend (the custom ops
count as zero under the counter, so only the reference can be counted).

Each function returns the forward count. `training(fwd)` is forward + backward: a GEMM's backward
is two GEMMs of the same size (the gradient of each operand), so 3× — exact when every GEMM
operand needs a gradient, as in the benchmarks (inputs and weights require grad; in the model the
first GEMM reads the word embeddings, which do).
"""

from __future__ import annotations

from mbkernels.config import MobileBertConfig


def gemm(m: int, n: int, k: int) -> int:
    """[m, k] @ [k, n]."""
    return 2 * m * n * k


def linear(rows: int, in_features: int, out_features: int) -> int:
    return gemm(rows, out_features, in_features)


def training(forward_flops: int) -> int:
    """Forward + backward of GEMM work whose operands all need gradients."""
    return 3 * forward_flops


def nonorm(*shape: int) -> int:
    """Elementwise: 0 under the GEMM convention (see the module docstring)."""
    return 0


layernorm = nonorm


def linear_norm(rows: int, in_features: int, out_features: int) -> int:
    return linear(rows, in_features, out_features)


def attention(batch: int, heads: int, seq: int, head_size: int, kv_seq: int | None = None) -> int:
    """QKᵀ and PV over [B, H, S, D]."""
    kv = seq if kv_seq is None else kv_seq
    return 2 * gemm(batch * heads * seq, kv, head_size)


def bottleneck_attention(batch: int, seq: int, hidden: int, intra: int, heads: int, mode: str = "shared") -> int:
    """The op's GEMMs for one of its modes (see `mbkernels.ops.reference.bottleneck_attention`)."""
    if mode not in ("shared", "bottleneck", "full", "none"):
        raise ValueError(f"mode: expected 'shared', 'bottleneck', 'full' or 'none', got {mode!r}")
    rows = batch * seq
    width = hidden if mode == "none" else intra
    qk_in = hidden if mode in ("full", "none") else width
    v_in = width if mode == "bottleneck" else hidden
    n = 0
    if mode != "none":
        n += linear(rows, hidden, intra)  # input bottleneck
    if mode == "shared":
        n += linear(rows, hidden, intra)  # the shared Q/K bottleneck
    n += 2 * linear(rows, qk_in, width) + linear(rows, v_in, width)
    n += attention(batch, heads, seq, width // heads)
    n += linear(rows, width, width)  # attention output
    return n


def ffn_stack(rows: int, width: int, intermediate: int, num_ffn: int) -> int:
    return num_ffn * (linear(rows, width, intermediate) + linear(rows, intermediate, width))


def embedding(rows: int, embedding_size: int, hidden: int, trigram: bool = True, transform: bool = True) -> int:
    """The transformation Linear after the (trigram) lookup; lookups and adds are free."""
    if not transform:
        return 0
    return linear(rows, embedding_size * (3 if trigram else 1), hidden)


def layer(config: MobileBertConfig, batch: int, seq: int) -> int:
    """One MobileBertLayer: bottleneck_attention → ffn_stack → linear_norm (with a bottleneck)."""
    c, rows = config, batch * seq
    n = bottleneck_attention(batch, seq, c.hidden_size, c.intra_bottleneck_size, c.num_attention_heads,
                             c.attention_mode)
    n += ffn_stack(rows, c.true_hidden_size, c.intermediate_size, c.num_feedforward_networks)
    if c.use_bottleneck:
        n += linear_norm(rows, c.true_hidden_size, c.hidden_size)
    return n


def model(config: MobileBertConfig, batch: int, seq: int) -> int:
    """MobileBertModel forward: embeddings, every layer, and the pooler's dense if it has one."""
    c = config
    transform = c.trigram_input or c.embedding_size != c.hidden_size
    n = embedding(batch * seq, c.embedding_size, c.hidden_size, c.trigram_input, transform)
    n += c.num_hidden_layers * layer(c, batch, seq)
    if c.classifier_activation:
        n += linear(batch, c.hidden_size, c.hidden_size)
    return n


__all__ = ["gemm", "linear", "training", "nonorm", "layernorm", "linear_norm", "attention",
           "bottleneck_attention", "ffn_stack", "embedding", "layer", "model"]
