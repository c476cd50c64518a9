"""The reference: every public op (mbkernels.ops) in plain torch. This file is the definition of correct.

Every kernel on every backend and ISA is tested against these functions (in float64), and these
functions are tested against Hugging Face transformers. They are also what an op without a kernel
runs inside its custom op. Shapes: `x` is [..., features]; attention tensors are [B, H, S, D];
`key_mask` is [B, S] (bool or 0/1 integers, 1 = attend) or None.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mbkernels.ops import int8
from mbkernels.ops.dropout import dropout

# Dropout streams: one seed per op call, one stream per dropout site inside the op.
ATTN_STREAM, HIDDEN_STREAM = 0, 1


def nonorm(x, weight, bias, residual=None):
    """NoNorm: `(x [+ residual]) * weight + bias` (MobileBERT's replacement for LayerNorm)."""
    if residual is not None:
        x = x + residual
    return x * weight + bias


def layernorm(x, weight, bias, residual=None, eps=1e-12):
    if residual is not None:
        x = x + residual
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def norm(x, weight, bias, residual, kind, eps):
    if kind == "nonorm":
        return nonorm(x, weight, bias, residual)
    if kind == "layernorm":
        return layernorm(x, weight, bias, residual, eps)
    raise ValueError(f"norm: expected 'nonorm' or 'layernorm', got {kind!r}")


def activation(x, act):
    if act == "relu":
        return F.relu(x)
    if act == "gelu":
        return F.gelu(x)  # erf form, as HF's "gelu"
    raise ValueError(f"act: expected 'relu' or 'gelu', got {act!r}")


def quantize_rows(x, smooth=None):
    """Activations as the int8 GEMM quantizes them (csrc/core/gemm/gemm.h, "int8"), per row of `x`
    [..., K]: v = x * smooth, q = round(v * (127 / max|v|)) in [-127, 127] (fp32 arithmetic, ties to
    even), returned as float with the row scale s = max|v| / 127 ([..., 1]); a zero row is q = 0,
    s = 0, a row holding inf or NaN gives NaN."""
    v = x.float() if smooth is None else x.float() * smooth
    amax = v.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    return torch.round(v * inv), amax / 127.0


def int8_linear(x, weight, scale, bias=None, smooth=None):
    """`x Wᵀ + bias` with W = weight (int8 [N, K]) * scale ([N], per output channel) on activations
    quantized per row (quantize_rows): the integer sums exact (float64), then acc * (s * scale) + bias."""
    q, s = quantize_rows(x, smooth)
    acc = (q.double() @ weight.double().t()).float()
    y = acc * (s * scale)
    return y if bias is None else y + bias


def linear(x, weight, bias=None):
    """`x Wᵀ + bias`: F.linear, or int8_linear when `weight` is an int8 weight (ops/int8.py)."""
    q = int8.form(weight)
    if q is None:
        return F.linear(x, weight, bias)
    return int8_linear(x, weight, q.scale, bias, q.smooth).to(x.dtype)


def linear_norm(x, weight, bias, norm_weight, norm_bias, residual=None, norm_kind="nonorm", eps=1e-12,
                dropout_p=0.0, seed=None):
    """`norm(dropout(x Wᵀ + bias) [+ residual])`."""
    y = dropout(linear(x, weight, bias), dropout_p, seed)
    return norm(y, norm_weight, norm_bias, residual, norm_kind, eps)


def masked_scores(q, k, key_mask):
    """Pre-softmax scores QKᵀ/√d with masked keys at finfo.min (never -inf: a KL against -inf is NaN)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores


def attention(q, k, v, key_mask=None, dropout_p=0.0, seed=None, return_scores=False):
    """softmax(QKᵀ/√d + mask) V over [B, H, S, D]; returns (context [B, H, S, D], scores or empty)."""
    scores = masked_scores(q, k, key_mask)
    probs = dropout(torch.softmax(scores, dim=-1), dropout_p, seed, ATTN_STREAM)
    ctx = torch.matmul(probs, v)
    return ctx, (scores if return_scores else scores.new_empty(0))


def _split_heads(x, num_heads):
    b, s, w = x.shape
    return x.view(b, s, num_heads, w // num_heads).transpose(1, 2)


def bottleneck_attention(h, key_mask,
                         input_weight, input_bias, input_norm_weight, input_norm_bias,
                         attention_weight, attention_bias, attention_norm_weight, attention_norm_bias,
                         query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
                         output_weight, output_bias, output_norm_weight, output_norm_bias,
                         num_heads, mode="shared", norm_kind="nonorm", eps=1e-12,
                         attn_dropout_p=0.0, hidden_dropout_p=0.0, seed=None, return_scores=False):
    """A MobileBERT block's attention half on h [B, S, hidden]; returns (out [B, S, intra], scores).

    mode: "shared"     b = N(h Wi), s = N(h Wa); Q, K from s; V from h; residual b (MobileBERT)
          "bottleneck" b = N(h Wi); Q, K, V from b; residual b (use_bottleneck_attention, -tiny)
          "full"       b = N(h Wi); Q, K, V from h; residual b (IB-BERT teacher)
          "none"       Q, K, V from h; residual h (no bottleneck: a BERT layer)
    out = N(dropout(ctx Woᵀ + bo) + residual). Weights of unused projections may be None.
    """
    if mode == "none":
        residual = h
    else:
        residual = norm(linear(h, input_weight, input_bias), input_norm_weight, input_norm_bias,
                        None, norm_kind, eps)
    if mode == "shared":
        qk_in = norm(linear(h, attention_weight, attention_bias), attention_norm_weight,
                     attention_norm_bias, None, norm_kind, eps)
        v_in = h
    elif mode == "bottleneck":
        qk_in = v_in = residual
    elif mode in ("full", "none"):
        qk_in = v_in = h
    else:
        raise ValueError(f"mode: expected 'shared', 'bottleneck', 'full' or 'none', got {mode!r}")
    q = _split_heads(linear(qk_in, query_weight, query_bias), num_heads)
    k = _split_heads(linear(qk_in, key_weight, key_bias), num_heads)
    v = _split_heads(linear(v_in, value_weight, value_bias), num_heads)
    ctx, scores = attention(q, k, v, key_mask, attn_dropout_p, seed, return_scores)
    ctx = ctx.transpose(1, 2).flatten(2)  # not reshape(B, S, -1): -1 is ambiguous for an empty batch
    y = dropout(linear(ctx, output_weight, output_bias), hidden_dropout_p, seed, HIDDEN_STREAM)
    return norm(y, output_norm_weight, output_norm_bias, residual, norm_kind, eps), scores


def ffn_stack(x, intermediate_weights, intermediate_biases, output_weights, output_biases,
              norm_weights, norm_biases, act="relu", norm_kind="nonorm", eps=(1e-12,), dropout_p=0.0,
              seed=None):
    """For each FFN i: `x = N_i(act(x W1ᵢᵀ + b1ᵢ) W2ᵢᵀ + b2ᵢ + x)`; dropout on the last FFN's output
    (where HF applies hidden dropout: only in a layer without a bottleneck)."""
    n = len(intermediate_weights)
    for i in range(n):
        y = linear(activation(linear(x, intermediate_weights[i], intermediate_biases[i]), act),
                     output_weights[i], output_biases[i])
        if i == n - 1:
            y = dropout(y, dropout_p, seed)
        x = norm(y, norm_weights[i], norm_biases[i], x, norm_kind, eps[i])
    return x


def trigram(e):
    """[next token, token, previous token] along features, zeros past the sequence ends."""
    nxt = F.pad(e[:, 1:], (0, 0, 0, 1))
    prv = F.pad(e[:, :-1], (0, 0, 1, 0))
    return torch.cat([nxt, e, prv], dim=2)


def embedding(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings,
              transformation_weight, transformation_bias, position_embeddings, token_type_embeddings,
              norm_weight, norm_bias, padding_idx=None, trigram_input=True, norm_kind="nonorm", eps=1e-5,
              dropout_p=0.0, seed=None):
    """Embeddings: lookup (or `inputs_embeds`) → trigram concat → Linear → + position + type → N.

    `transformation_weight=None` skips the Linear (no trigram and embedding width == hidden).
    """
    e = F.embedding(input_ids, word_embeddings, padding_idx) if inputs_embeds is None else inputs_embeds
    if trigram_input:
        e = trigram(e)
    if transformation_weight is not None:
        e = linear(e, transformation_weight, transformation_bias)
    e = e + F.embedding(position_ids, position_embeddings) + F.embedding(token_type_ids, token_type_embeddings)
    return dropout(norm(e, norm_weight, norm_bias, None, norm_kind, eps), dropout_p, seed)


__all__ = ["nonorm", "layernorm", "norm", "activation", "linear_norm", "masked_scores", "attention",
           "bottleneck_attention", "ffn_stack", "trigram", "embedding"]

