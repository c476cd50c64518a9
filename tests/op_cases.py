"""Inputs for every op at MobileBERT-like (but small) shapes, shared by the op tests and opcheck.

Each case returns (public function, positional args, keyword args); float tensors require grad.
"""

from __future__ import annotations

import torch

from mbkernels import ops


def _t(*shape, dtype=torch.float32, scale=1.0, g=None):
    return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()


def _lin(out_f, in_f, dtype, g):
    return _t(out_f, in_f, dtype=dtype, scale=in_f ** -0.5, g=g), _t(out_f, dtype=dtype, scale=0.1, g=g)


def _norm_params(n, dtype, g):
    return ((1 + 0.1 * torch.randn(n, generator=g, dtype=dtype)).requires_grad_(), _t(n, dtype=dtype, scale=0.1, g=g))


def key_mask(b, s, g):
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    lengths[0] = s
    return torch.arange(s)[None] < lengths[:, None]


def nonorm_case(b=2, s=7, n=128, dtype=torch.float32, residual=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    w, bias = _norm_params(n, dtype, g)
    return ops.nonorm, (_t(b, s, n, dtype=dtype, g=g), w, bias, _t(b, s, n, dtype=dtype, g=g) if residual else None), {}


def layernorm_case(b=2, s=7, n=128, dtype=torch.float32, residual=True, seed=0):
    f, args, _ = nonorm_case(b, s, n, dtype, residual, seed)
    return ops.layernorm, args, {"eps": 1e-5}


def linear_norm_case(b=2, s=7, k=512, n=128, dtype=torch.float32, norm="nonorm", residual=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    W, bias = _lin(n, k, dtype, g)
    w, nb = _norm_params(n, dtype, g)
    r = _t(b, s, n, dtype=dtype, g=g) if residual else None
    return ops.linear_norm, (_t(b, s, k, dtype=dtype, g=g), W, bias, w, nb, r), {"norm": norm, "eps": 1e-12}


def attention_case(b=2, h=4, s=7, d=32, dtype=torch.float32, masked=True, return_scores=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (_t(b, h, s, d, dtype=dtype, g=g) for _ in range(3))
    return ops.attention, (q, k, v, key_mask(b, s, g) if masked else None), {"return_scores": return_scores}


def bottleneck_attention_case(b=2, s=7, hidden=256, intra=64, heads=2, mode="shared", norm="nonorm",
                              dtype=torch.float32, return_scores=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = hidden if mode == "none" else intra
    qk_in = hidden if mode in ("full", "none") else width
    v_in = width if mode == "bottleneck" else hidden
    inp = (*_lin(intra, hidden, dtype, g), *_norm_params(intra, dtype, g)) if mode != "none" else (None,) * 4
    att = (*_lin(intra, hidden, dtype, g), *_norm_params(intra, dtype, g)) if mode == "shared" else (None,) * 4
    q, k, v = _lin(width, qk_in, dtype, g), _lin(width, qk_in, dtype, g), _lin(width, v_in, dtype, g)
    out = (*_lin(width, width, dtype, g), *_norm_params(width, dtype, g))
    args = (_t(b, s, hidden, dtype=dtype, g=g), key_mask(b, s, g), *inp, *att, *q, *k, *v, *out)
    return ops.bottleneck_attention, args, {"num_heads": heads, "mode": mode, "norm": norm, "eps": 1e-12,
                                            "return_scores": return_scores}


def ffn_stack_case(b=2, s=7, width=128, inter=512, n=4, act="relu", norm="nonorm", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    l1 = [_lin(inter, width, dtype, g) for _ in range(n)]
    l2 = [_lin(width, inter, dtype, g) for _ in range(n)]
    nn_ = [_norm_params(width, dtype, g) for _ in range(n)]
    args = (_t(b, s, width, dtype=dtype, g=g), [w for w, _ in l1], [b_ for _, b_ in l1], [w for w, _ in l2],
            [b_ for _, b_ in l2], [w for w, _ in nn_], [b_ for _, b_ in nn_])
    return ops.ffn_stack, args, {"act": act, "norm": norm, "eps": [1e-12] * (n - 1) + [1e-5]}


def embedding_case(b=2, s=7, vocab=50, emb=32, hidden=128, trigram=True, norm="nonorm", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (b, s), generator=g)
    types = torch.randint(0, 2, (b, s), generator=g)
    pos = torch.arange(s)[None].expand(b, s)
    Wt, bt = _lin(hidden, emb * (3 if trigram else 1), dtype, g)
    w, nb = _norm_params(hidden, dtype, g)
    args = (ids, None, types, pos, _t(vocab, emb, dtype=dtype, g=g), Wt, bt, _t(max(s, 64), hidden, dtype=dtype, g=g),
            _t(2, hidden, dtype=dtype, g=g), w, nb)
    return ops.embedding, args, {"padding_idx": 0, "trigram": trigram, "norm": norm, "eps": 1e-5}


CASES = {
    "nonorm": nonorm_case,
    "layernorm": layernorm_case,
    "linear_norm": linear_norm_case,
    "attention": attention_case,
    "bottleneck_attention": bottleneck_attention_case,
    "ffn_stack": ffn_stack_case,
    "embedding": embedding_case,
}
