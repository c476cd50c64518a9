"""`mbkernels.export_program` (torch.export, custom ops kept or decomposed) and `export_onnx` run by
the real ONNX Runtime: outputs match the eager model (≤ 1e-4 per-row relative error) at shapes other
than the example's (dynamic batch and sequence), with padding, at realistic activation scale."""

import numpy as np
import pytest
import torch

import mbkernels
from mbkernels import MobileBertConfig, MobileBertForSequenceClassification, MobileBertModel, export_onnx, export_program
from mbkernels.export import INPUT_NAMES, output_names
from mbkernels.testing import realistic_init_, rel_err

from helpers import padded_batch, small

TOL = 1e-4


def _model(cls=MobileBertModel, **overrides):
    model = cls(small(MobileBertConfig.mobilebert(), **overrides)).eval()
    realistic_init_(model)
    return model


def _inputs(config, batch, seq):
    ids, types, mask = padded_batch(config, batch=batch, seq=seq, seed=batch + seq)
    return ids, mask.long(), types


def _eager(model, ids, mask, types):
    with torch.inference_mode():
        return model(ids, attention_mask=mask, token_type_ids=types).to_tuple()


def _mbkernels_ops(program) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function" and "mbkernels" in str(n.target)}


@pytest.mark.parametrize("decompose", [False, True], ids=["custom_ops", "decomposed"])
def test_export_program(decompose):
    model = _model()
    program = export_program(model, decompose=decompose)
    found = _mbkernels_ops(program)
    if decompose:
        assert not found
    else:  # CPU fp32 inference runs the layers as one ops.encoder call, elsewhere as three ops each
        layers = {"mbkernels.encoder.default"} if "mbkernels.encoder.default" in found else {
            f"mbkernels.{op}.default" for op in ("bottleneck_attention", "ffn_stack", "linear_norm")}
        assert {"mbkernels.embedding.default"} | layers <= found
    for batch, seq in ((1, 7), (3, 11)):  # not the example's (2, 16): the axes are dynamic
        args = _inputs(model.config, batch, seq)
        with torch.inference_mode():
            got = program.module()(*args)
        expected = _eager(model, *args)
        assert expected[0].abs().max() > 1e5
        assert len(got) == len(expected) == len(output_names(model))
        for g, e in zip(got, expected, strict=True):
            assert rel_err(g, e) <= TOL


def test_export_program_saves_and_loads(tmp_path):
    model = _model(MobileBertForSequenceClassification, num_labels=3)
    path = tmp_path / "model.pt2"
    torch.export.save(export_program(model), path)
    loaded = torch.export.load(path)
    args = _inputs(model.config, 2, 9)
    with torch.inference_mode():
        assert rel_err(loaded.module()(*args)[0], _eager(model, *args)[0]) <= TOL


def test_export_onnx_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _model()
    path = tmp_path / "model.onnx"
    names = export_onnx(model, path)
    assert names == ["last_hidden_state", "pooler_output"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    assert [o.name for o in session.get_outputs()] == names
    for batch, seq in ((1, 5), (3, 13)):
        args = _inputs(model.config, batch, seq)
        got = session.run(None, {name: a.numpy() for name, a in zip(INPUT_NAMES, args, strict=True)})
        for g, e in zip(got, _eager(model, *args), strict=True):
            assert rel_err(torch.from_numpy(np.asarray(g)), e) <= TOL


def test_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="model: expected eval mode"):
        export_program(model.train())
    with pytest.raises(TypeError, match="model: expected an mbkernels model"):
        export_program(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="input_ids: expected a \\[batch, sequence\\] tensor"):
        export_program(model.eval(), torch.ones(4, dtype=torch.long))
    assert mbkernels.backend.current_backend() == "fused"  # nothing leaked from the export contexts
