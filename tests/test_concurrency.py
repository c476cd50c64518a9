"""One model serving several Python threads at once gives what sequential calls give (the packed-weight
cache, the backend state and the finite checks are shared or per thread as they should be), and
thousands of inference calls do not grow the process's memory."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import torch

import mbkernels
from mbkernels import MobileBertConfig, MobileBertModel


def tiny_model() -> MobileBertModel:
    torch.manual_seed(0)
    config = MobileBertConfig.mobilebert(num_hidden_layers=2, hidden_size=64, embedding_size=32,
                                         intra_bottleneck_size=32, intermediate_size=64, num_attention_heads=2,
                                         vocab_size=100, max_position_embeddings=16)
    return MobileBertModel(config).eval()


def inputs(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Different lengths, padding and batch sizes per call."""
    g = torch.Generator().manual_seed(i)
    batch, seq = 1 + i % 3, 3 + i % 11
    ids = torch.randint(1, 100, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, max(1, seq - i % 4):] = 0
    return ids, mask


def test_threads_give_the_sequential_results():
    model = tiny_model()
    calls = list(range(24))
    with torch.inference_mode():
        expected = [model(*inputs(i)).last_hidden_state for i in calls]

    def work(i):
        # Half the threads check finiteness as they go: check_finite is per thread, and finite inputs pass.
        with torch.inference_mode(), (mbkernels.check_finite() if i % 2 else mbkernels.use_backend("fused")):
            return model(*inputs(i)).last_hidden_state

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(work, calls))
    for i, (g, e) in enumerate(zip(got, expected)):
        assert torch.equal(g, e), f"call {i}: threaded result differs from the sequential one"
    assert mbkernels.backend.last_ran["linear_norm"].startswith(("cpu:", "reference"))


def test_threads_with_different_backends_stay_apart():
    """`use_backend` is per thread: a reference thread and fused threads at once each run their own."""
    model = tiny_model()
    ids, mask = inputs(5)
    with torch.inference_mode():
        fused = model(ids, attention_mask=mask).last_hidden_state
        with mbkernels.use_backend("reference"):
            ref = model(ids, attention_mask=mask).last_hidden_state

    def work(backend):
        with torch.inference_mode(), mbkernels.use_backend(backend):
            return backend, model(ids, attention_mask=mask).last_hidden_state

    with ThreadPoolExecutor(max_workers=4) as pool:
        for backend, out in pool.map(work, ["reference", "fused"] * 6):
            assert torch.equal(out, ref if backend == "reference" else fused), backend


def _rss_growth(calls: int, warmup: int = 200) -> float:
    """RSS growth in bytes over `calls` inference calls, after `warmup` calls (caches filled). One
    intra-op thread: fast on a busy machine, and memory does not depend on it."""
    model = tiny_model()
    process = psutil.Process()
    batch = [inputs(i) for i in range(16)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for i in range(warmup):
                model(*batch[i % 16])
            gc.collect()
            before = process.memory_info().rss
            for i in range(calls):
                model(*batch[i % 16])
            gc.collect()
            return process.memory_info().rss - before
    finally:
        torch.set_num_threads(threads)


def test_a_thousand_inference_calls_do_not_grow_memory():
    growth = _rss_growth(1_000)
    assert growth < 2 * 2**20, f"RSS grew by {growth / 2**20:.2f} MiB over 1,000 calls"


@pytest.mark.slow
def test_ten_thousand_inference_calls_do_not_grow_memory():
    growth = _rss_growth(10_000)
    print(f"RSS growth over 10,000 calls: {growth / 2**20:.2f} MiB")
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.2f} MiB over 10,000 calls"
