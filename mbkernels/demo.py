"""`mbkernels demo`: build MobileBERT, check every op on this machine against the reference, time it.

Each op is run on its fused path with the real model's weights (layer 0, the embeddings) and
compared with the float64 reference; the table says which backend and ISA actually ran it. Then
the whole model is timed at batch × seq tokens: fused vs reference vs Hugging Face eager.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from mbkernels import backend, info, ops
from mbkernels.config import MobileBertConfig
from mbkernels.modeling import MobileBertModel
from mbkernels.testing import rel_err


def _to64(x):
    if isinstance(x, list):
        return [_to64(t) for t in x]
    return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _op_inputs(model: MobileBertModel, ids: torch.Tensor) -> dict[str, tuple]:
    """(function, args, kwargs) per op, from the model's own weights."""
    c = model.config
    e = model.embeddings
    layer = model.encoder.layer[0]
    with torch.no_grad():
        h = e(ids)
    pos = e.position_ids[:, : ids.shape[1]].expand_as(ids)
    types = torch.zeros_like(ids)
    dn = lambda m: (m.dense.weight, m.dense.bias, m.LayerNorm.weight, m.LayerNorm.bias)  # noqa: E731
    a = torch.randn(ids.shape[0], ids.shape[1], c.true_hidden_size)
    ffns = [*layer.ffn, None]
    inter = [f.intermediate.dense if f is not None else layer.intermediate.dense for f in ffns]
    outs = [f.output if f is not None else layer.output for f in ffns]
    heads, d = c.num_attention_heads, c.attention_head_size
    q, k, v = (torch.randn(ids.shape[0], heads, ids.shape[1], d) for _ in range(3))
    key_mask = torch.ones_like(ids, dtype=torch.bool)
    key_mask[:, -ids.shape[1] // 4:] = False
    return {
        "embedding": (ops.embedding, (ids, None, types, pos, e.word_embeddings.weight, e.embedding_transformation.weight,
                                      e.embedding_transformation.bias, e.position_embeddings.weight,
                                      e.token_type_embeddings.weight, e.LayerNorm.weight, e.LayerNorm.bias),
                      {"padding_idx": c.pad_token_id, "trigram": c.trigram_input, "norm": c.norm}),
        "nonorm": (ops.nonorm, (h, e.LayerNorm.weight, e.LayerNorm.bias, h), {}),
        "layernorm": (ops.layernorm, (h, e.LayerNorm.weight, e.LayerNorm.bias, h), {"eps": 1e-5}),
        "bottleneck_attention": (ops.bottleneck_attention,
                                 (h, key_mask, *layer.attention_weights()),
                                 {"num_heads": heads, "mode": c.attention_mode, "norm": c.norm}),
        "attention": (ops.attention, (q, k, v, key_mask), {}),
        "ffn_stack": (ops.ffn_stack, (a, [m.weight for m in inter], [m.bias for m in inter],
                                      [o.dense.weight for o in outs], [o.dense.bias for o in outs],
                                      [o.LayerNorm.weight for o in outs], [o.LayerNorm.bias for o in outs]),
                      {"act": c.hidden_act, "norm": c.norm}),
        "linear_norm": (ops.linear_norm, (a, *dn(layer.output.bottleneck), h), {"norm": c.norm}),
    }


def check_ops(model: MobileBertModel, ids: torch.Tensor) -> list[tuple[str, float, str]]:
    rows = []
    with torch.no_grad():
        for name, (fn, args, kwargs) in _op_inputs(model, ids).items():
            out = fn(*args, **kwargs)
            ran = backend.last_ran.get(name, "?")
            from mbkernels.backend import use_backend

            with use_backend("reference"):
                ref = fn(*[_to64(a) for a in args], **kwargs)
            out, ref = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
            rows.append((name, rel_err(out, ref), ran))
    return rows


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def time_providers(model: MobileBertModel, ids: torch.Tensor, repeats: int) -> list[tuple[str, float]]:
    from mbkernels.backend import use_backend

    rows = []
    with torch.inference_mode():
        rows.append(("mbkernels fused", _median_ms(lambda: model(ids), repeats)))
        with use_backend("reference"):
            rows.append(("mbkernels reference", _median_ms(lambda: model(ids), repeats)))
        try:
            import transformers
        except ImportError:
            rows.append(("Hugging Face eager", float("nan")))
        else:
            d = copy.deepcopy(model.config).to_dict()
            d.pop("model_type")
            hf = transformers.MobileBertModel(transformers.MobileBertConfig(**d), add_pooling_layer=False).eval()
            hf.load_state_dict(model.state_dict(), strict=False)
            rows.append(("Hugging Face eager", _median_ms(lambda: hf(ids), repeats)))
    return rows


def run_demo(layers: int = 24, batch: int = 1, seq: int = 128, repeats: int = 10) -> int:
    torch.manual_seed(0)
    i = info()
    print(f"mbkernels {i['mbkernels']}  torch {i['torch']}  triton {i['triton']}  threads {i['threads']}")
    print(f"ISAs compiled: {', '.join(i['compiled_isas']) or '-'}; runnable: {', '.join(i['supported_isas']) or '-'}; "
          f"active: {i['active_isa']}  (extension {i['extension']}; CUDA {'yes' if i['cuda_available'] else 'no'})")
    config = MobileBertConfig.mobilebert(num_hidden_layers=layers)
    model = MobileBertModel(config, add_pooling_layer=False).eval()
    print(f"\nMobileBERT ({layers} layers, {model.num_parameters() / 1e6:.1f}M parameters), "
          f"ops checked at batch {batch} x {seq} tokens against the float64 reference:")
    ids = torch.randint(1, config.vocab_size, (batch, seq))
    print(f"  {'op':<22} {'rel. error':>10}  ran on")
    for name, err, ran in check_ops(model, ids):
        note = "" if ran.startswith(("cpu:", "triton")) else "  (no kernel yet: the reference ran inside the op)"
        print(f"  {name:<22} {err:>10.2e}  {ran}{note}")
    print(f"\nLatency, inference, batch {batch} x {seq} tokens, median of {repeats}:")
    rows = time_providers(model, ids, repeats)
    fused = rows[0][1]
    for name, ms in rows:
        print(f"  {name:<22} {ms:8.2f} ms   {ms / fused:5.2f}x the fused time")
    return 0
