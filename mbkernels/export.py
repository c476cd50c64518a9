"""Export an mbkernels model for inference: `torch.export` (custom ops kept, or decomposed) and ONNX.

`export_program(model)` traces `model(input_ids, attention_mask, token_type_ids)` in eval mode with
dynamic batch and sequence axes. With `decompose=False` the graph calls `torch.ops.mbkernels.*` (the
fused ops; loading or running the program needs `import mbkernels`); with `decompose=True` it is
traced under `use_backend("reference")`, so it holds only ATen ops (the reference decomposition of
every op). `export_onnx(model, path)` writes that decomposed graph as ONNX (the dynamo exporter,
onnxscript), which ONNX Runtime runs.

The exported program returns the model's outputs that are not None, in order, as a tuple (for
`MobileBertModel`: last_hidden_state, pooler_output; for a head: its logits); `output_names(model)`
gives their names.

Decomposed graphs need a sequence of at least 2 tokens (torch's matmul decomposition specializes a
length of 1); pass `dynamic=False` to export for the example's exact shape instead.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from mbkernels.backend import current_backend, use_backend

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class _Inference(nn.Module):
    """`model(input_ids, attention_mask, token_type_ids)` → the tuple of its non-None outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).to_tuple()


def example_inputs(model: nn.Module, batch: int = 2, seq: int = 16) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, token_type_ids) on the model's device: ids from 1, no padding."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, model.config.vocab_size, (batch, seq), generator=g).to(device)
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def _inputs(model: nn.Module, input_ids, attention_mask, token_type_ids) -> tuple[torch.Tensor, ...]:
    if not isinstance(model, nn.Module) or not hasattr(model, "config") or not hasattr(model.config, "attention_mode"):
        raise TypeError(f"model: expected an mbkernels model (MobileBertModel or a head), got {type(model).__name__}")
    if model.training:
        raise ValueError("model: expected eval mode (export is for inference; dropout would be traced), "
                         "got training mode: call model.eval() first")
    if input_ids is None:
        return example_inputs(model)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected a [batch, sequence] tensor, got "
                         f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__}")
    return (input_ids, torch.ones_like(input_ids) if attention_mask is None else attention_mask,
            torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)


def output_names(model: nn.Module, input_ids=None, attention_mask=None, token_type_ids=None) -> list[str]:
    """Names of the exported program's outputs, in order (one eager call on the example inputs)."""
    args = _inputs(model, input_ids, attention_mask, token_type_ids)
    with torch.inference_mode():
        return model(args[0], attention_mask=args[1], token_type_ids=args[2]).keys()


def _dynamic_shapes(model: nn.Module, decompose: bool, dynamic: bool):
    if not dynamic:
        return None
    batch = torch.export.Dim("batch")
    # Decomposed, torch's matmul decomposition specializes a sequence of 1 (see the module docstring).
    seq = torch.export.Dim("sequence", min=2 if decompose else 1, max=model.config.max_position_embeddings)
    return tuple({0: batch, 1: seq} for _ in INPUT_NAMES)


@contextlib.contextmanager
def _tracing(decompose: bool):
    """The backend the trace sees; decomposed, also size-oblivious shape reasoning, so the reference
    trigram's slicing does not specialize small sequence lengths."""
    if not decompose:
        # The custom ops are traced as themselves on any backend but "reference", which bypasses them.
        with use_backend("fused") if current_backend() == "reference" else contextlib.nullcontext(), torch.no_grad():
            yield
        return
    import torch.fx.experimental._config as fx_config

    with use_backend("reference"), fx_config.patch(backed_size_oblivious=True), torch.no_grad():
        yield


def export_program(model: nn.Module, input_ids: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                   *, decompose: bool = False, dynamic: bool = True) -> torch.export.ExportedProgram:
    """`torch.export` of `model` (eval mode) called as `model(input_ids, attention_mask, token_type_ids)`.

    The example inputs default to `example_inputs(model)`; missing masks / token types to ones /
    zeros. `dynamic=True` makes batch and sequence length dynamic. `decompose=True` traces the
    reference decomposition (ATen ops only), else the graph keeps the `mbkernels::` custom ops."""
    args = _inputs(model, input_ids, attention_mask, token_type_ids)
    with _tracing(decompose):
        return torch.export.export(_Inference(model).eval(), args, dynamic_shapes=_dynamic_shapes(model, decompose, dynamic))


def onnx_export(module: nn.Module, args: tuple, path: str | os.PathLike, input_names: Sequence[str],
                output_names: Sequence[str], dynamic_shapes=None) -> None:
    """`torch.onnx.export(module(*args))` with the dynamo exporter (onnxscript), gradients off."""
    try:
        import onnxscript  # noqa: F401  torch.onnx.export(dynamo=True) needs it
    except ImportError as e:
        raise RuntimeError("ONNX export needs onnxscript (pip install onnxscript)") from e
    with torch.no_grad(), warnings.catch_warnings():
        # Inputs sharing one Dim (batch, sequence) make the exporter say so once per input: expected here.
        warnings.filterwarnings("ignore", message="# The axis name")
        torch.onnx.export(module, args, os.fspath(path), dynamo=True, input_names=list(input_names),
                          output_names=list(output_names), dynamic_shapes=dynamic_shapes, verbose=False)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                *, dynamic: bool = True) -> list[str]:
    """Write `model` (eval mode) as ONNX at `path` through the reference decomposition.

    Inputs are named input_ids, attention_mask, token_type_ids (int64, [batch, sequence]; dynamic
    axes "batch" and "sequence" unless `dynamic=False`); returns the output names."""
    names = output_names(model, input_ids, attention_mask, token_type_ids)
    args = _inputs(model, input_ids, attention_mask, token_type_ids)
    with _tracing(decompose=True):
        onnx_export(_Inference(model).eval(), args, path, INPUT_NAMES, names, _dynamic_shapes(model, True, dynamic))
    return names


__all__ = ["export_program", "export_onnx", "onnx_export", "example_inputs", "output_names", "INPUT_NAMES"]
