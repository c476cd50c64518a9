"""Bad input at every public entry — ops, modules, from_pretrained, the CLI — gets an exception (or,
on the command line, exit status 2 and a message) that names the argument, the expected and the
received; never a crash, a silent NaN or a wrong answer. Each case asserts the exception type and
those three pieces of its message. Not errors: an empty batch (an empty result of the right shape,
as torch gives) and non-contiguous, sliced or expanded inputs (the same result as contiguous ones)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mbkernels
from mbkernels import MobileBertConfig, MobileBertForMaskedLM, MobileBertModel, ops
from mbkernels.cli import main as cli_main
from mbkernels.testing import rel_err

from helpers import small
from op_cases import CASES, attention_case, bottleneck_attention_case, embedding_case, ffn_stack_case, \
    linear_norm_case, nonorm_case

ROOT = Path(__file__).resolve().parents[1]


def raises_naming(exc: type[Exception], needles: list[str], fn, *args, **kwargs) -> Exception:
    with pytest.raises(exc) as e:
        fn(*args, **kwargs)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))
    return e.value


# -- the model ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return MobileBertModel(small(MobileBertConfig.mobilebert(), max_position_embeddings=16)).eval()


IDS = torch.ones(2, 4, dtype=torch.long)


@pytest.mark.parametrize("kwargs,exc,needles", [
    ({"input_ids": torch.tensor([[1, 2, 1000]])}, ValueError, ["input_ids", "[0, 1000)", "1000"]),
    ({"input_ids": torch.tensor([[1, -1]])}, ValueError, ["input_ids", "-1"]),
    ({"input_ids": torch.ones(1, 17, dtype=torch.long)}, ValueError, ["input_ids", "16", "17"]),
    ({"input_ids": torch.ones(1, 0, dtype=torch.long)}, ValueError, ["input_ids", "at least 1 token", "length 0"]),
    ({"input_ids": torch.ones(2, 4)}, TypeError, ["input_ids", "integer", "torch.float32"]),
    ({"input_ids": torch.ones(4, dtype=torch.long)}, ValueError, ["input_ids", "[batch, sequence]", "(4,)"]),
    ({"input_ids": torch.ones(2, 4, dtype=torch.long, device="meta")}, ValueError, ["input_ids", "cpu", "meta"]),
    ({"input_ids": IDS, "attention_mask": torch.ones(2, 5)}, ValueError, ["attention_mask", "(2, 4)", "(2, 5)"]),
    ({"input_ids": IDS, "attention_mask": torch.ones(2, 1, 4)}, ValueError, ["attention_mask", "(2, 4)", "(2, 1, 4)"]),
    ({"input_ids": IDS, "attention_mask": torch.full((2, 4), 0.5)}, ValueError, ["attention_mask", "0 or 1", "0.5"]),
    ({"input_ids": IDS, "attention_mask": torch.full((2, 4), 2)}, ValueError, ["attention_mask", "0 or 1", "2"]),
    ({"input_ids": IDS, "attention_mask": torch.ones(2, 4, device="meta")}, ValueError,
     ["attention_mask", "cpu", "meta"]),
    ({"input_ids": IDS, "token_type_ids": torch.full((2, 4), 2)}, ValueError, ["token_type_ids", "[0, 2)", "2"]),
    ({"input_ids": IDS, "token_type_ids": torch.zeros(2, 3, dtype=torch.long)}, ValueError,
     ["token_type_ids", "(2, 4)", "(2, 3)"]),
    ({"input_ids": IDS, "token_type_ids": torch.zeros(2, 4)}, TypeError, ["token_type_ids", "integer", "float32"]),
    ({"input_ids": IDS, "position_ids": torch.full((2, 4), 16)}, ValueError, ["position_ids", "[0, 16)", "16"]),
    ({"inputs_embeds": torch.randn(2, 4, 7)}, ValueError, ["inputs_embeds", "[batch, sequence, 128]", "(2, 4, 7)"]),
    ({"inputs_embeds": torch.randn(2, 4, 128, dtype=torch.float64)}, TypeError,
     ["word_embeddings", "torch.float64", "torch.float32"]),
    ({"input_ids": IDS, "inputs_embeds": torch.randn(2, 4, 128)}, ValueError, ["input_ids / inputs_embeds", "both"]),
    ({}, ValueError, ["input_ids", "neither"]),
])
def test_bad_model_input(model, kwargs, exc, needles):
    raises_naming(exc, needles, model, **kwargs)


def test_layer_called_directly_names_the_op_argument(model):
    layer = model.encoder.layer[0]
    raises_naming(ValueError, ["bottleneck_attention", "input_weight", "(*, 100)", "(128, 512)"],
                  layer, torch.randn(2, 4, 100))
    raises_naming(ValueError, ["bottleneck_attention", "key_mask", "(2, 4)", "(2, 3)"],
                  layer, torch.randn(2, 4, 512), torch.ones(2, 3, dtype=torch.bool))


def test_float16_on_the_fused_cpu_backend_is_a_dtype_error(model):
    fn, args, kwargs = nonorm_case(dtype=torch.float16)
    raises_naming(TypeError, ["mbkernels.ops.nonorm", "float32", "float16"], fn, *args, **kwargs)


def test_masks_in_every_accepted_form_agree(model):
    ids = torch.randint(1, 1000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        outs = [model(ids, attention_mask=m).last_hidden_state for m in (mask, mask.float(), mask.bool())]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("kwargs,needles", [
    ({"hidden_size": 0}, ["MobileBertConfig.hidden_size", "a positive int", "0"]),
    ({"num_attention_heads": 3}, ["MobileBertConfig.num_attention_heads", "a divisor of the attention width 128", "3"]),
    ({"hidden_act": "tanh"}, ["MobileBertConfig.hidden_act", "one of", "'tanh'"]),
    ({"pad_token_id": 40000}, ["MobileBertConfig.pad_token_id", "[0, vocab_size=30522)", "40000"]),
])
def test_bad_config(kwargs, needles):
    raises_naming(ValueError, needles, MobileBertConfig.mobilebert, **kwargs)


def test_wrong_config_type():
    raises_naming(TypeError, ["config", "MobileBertConfig", "dict"], MobileBertModel, {"hidden_size": 512})


# -- the ops ------------------------------------------------------------------------------------------

def _with(case, index, value, **kwargs):
    """The op case with positional argument `index` replaced by value(arg) (and kwargs overridden)."""
    fn, args, kw = case()
    args = list(args)
    args[index] = value(args[index])
    return fn, tuple(args), {**kw, **kwargs}


def _d(t):
    return t.detach()


OP_CASES = [
    # dtype
    ("nonorm x int", lambda: _with(nonorm_case, 0, lambda x: _d(x).long()), TypeError,
     ["nonorm", "x", "floating-point", "torch.int64"]),
    ("linear_norm weight f64", lambda: _with(linear_norm_case, 1, lambda w: _d(w).double()), TypeError,
     ["linear_norm", "weight", "torch.float32 (the dtype of x)", "torch.float64"]),
    ("attention float mask", lambda: _with(attention_case, 3, lambda m: m.float()), TypeError,
     ["attention", "key_mask", "bool or 0/1 integer", "torch.float32"]),
    ("embedding float ids", lambda: _with(embedding_case, 0, lambda i: i.float()), TypeError,
     ["embedding", "input_ids", "integer", "torch.float32"]),
    # device mix
    ("nonorm weight meta", lambda: _with(nonorm_case, 1, lambda w: _d(w).to("meta")), ValueError,
     ["nonorm", "weight", "on cpu (like x)", "meta"]),
    ("ffn_stack weight meta", lambda: _with(ffn_stack_case, 3, lambda ws: [ws[0], _d(ws[1]).to("meta"), *ws[2:]]),
     ValueError, ["ffn_stack", "output_weights[1]", "on cpu (like x)", "meta"]),
    # shapes
    ("nonorm weight", lambda: _with(nonorm_case, 1, lambda w: _d(w)[:5]), ValueError,
     ["nonorm", "weight", "(128,) (x's last dim)", "(5,)"]),
    ("nonorm residual", lambda: _with(nonorm_case, 3, lambda r: _d(r)[:, :3]), ValueError,
     ["nonorm", "residual", "(2, 7, 128)", "(2, 3, 128)"]),
    ("nonorm 0-d x", lambda: _with(nonorm_case, 0, lambda x: torch.tensor(1.0)), ValueError,
     ["nonorm", "x", "at least 1 dimension", "0-d"]),
    ("layernorm bias", lambda: _with(layernorm_case_, 2, lambda b: _d(b)[:7]), ValueError,
     ["layernorm", "bias", "(128,)", "(7,)"]),
    ("linear_norm weight", lambda: _with(linear_norm_case, 1, lambda w: _d(w)[:, :5]), ValueError,
     ["linear_norm", "weight", "(*, 512)", "(128, 5)"]),
    ("linear_norm bias", lambda: _with(linear_norm_case, 2, lambda b: _d(b)[:3]), ValueError,
     ["linear_norm", "bias", "(128,)", "(3,)"]),
    ("linear_norm residual", lambda: _with(linear_norm_case, 5, lambda r: _d(r)[..., :64]), ValueError,
     ["linear_norm", "residual", "(2, 7, 128)", "(2, 7, 64)"]),
    ("attention 3-d q", lambda: _with(attention_case, 0, lambda q: _d(q)[0]), ValueError,
     ["attention", "q", "4-d", "(4, 7, 32)"]),
    ("attention k head size", lambda: _with(attention_case, 1, lambda k: _d(k)[..., :5]), ValueError,
     ["attention", "k", "(2, 4, 7, 32)", "(2, 4, 7, 5)"]),
    ("attention v keys", lambda: _with(attention_case, 2, lambda v: _d(v)[:, :, :3]), ValueError,
     ["attention", "v", "(2, 4, 7, 32)", "(2, 4, 3, 32)"]),
    ("attention mask shape", lambda: _with(attention_case, 3, lambda m: m[:, :3]), ValueError,
     ["attention", "key_mask", "(2, 7)", "(2, 3)"]),
    ("attention mask values", lambda: _with(attention_case, 3, lambda m: m.long() * 2), ValueError,
     ["attention", "key_mask", "values 0 or 1", "2"]),
    ("bottleneck_attention heads", lambda: _with(bottleneck_attention_case, 0, lambda h: h, num_heads=3), ValueError,
     ["bottleneck_attention", "num_heads", "divisor of the attention width 64", "3"]),
    ("bottleneck_attention missing weight", lambda: _with(bottleneck_attention_case, 2, lambda w: None), ValueError,
     ["bottleneck_attention", "input_weight", "(*, 256)", "None"]),
    ("bottleneck_attention value weight", lambda: _with(bottleneck_attention_case, 14, lambda w: _d(w)[:, :100]),
     ValueError, ["bottleneck_attention", "value_weight", "(64, 256)", "(64, 100)"]),
    ("bottleneck_attention 2-d h", lambda: _with(bottleneck_attention_case, 0, lambda h: _d(h)[0]), ValueError,
     ["bottleneck_attention", "h", "3-d", "(7, 256)"]),
    ("ffn_stack output weight", lambda: _with(ffn_stack_case, 3, lambda ws: [ws[0][:, :7], *ws[1:]]), ValueError,
     ["ffn_stack", "output_weights[0]", "(128, 512)", "(128, 7)"]),
    ("ffn_stack list length", lambda: _with(ffn_stack_case, 2, lambda bs: bs[:3]), ValueError,
     ["ffn_stack", "intermediate_biases", "4 entries", "3"]),
    ("embedding transformation", lambda: _with(embedding_case, 5, lambda w: _d(w)[:, :10]), ValueError,
     ["embedding", "transformation_weight", "(128, 96)", "(128, 10)"]),
    ("embedding token types shape", lambda: _with(embedding_case, 2, lambda t: t[:, :3]), ValueError,
     ["embedding", "token_type_ids", "(2, 7)", "(2, 3)"]),
    # values
    ("embedding ids range", lambda: _with(embedding_case, 0, lambda i: i + 100), ValueError,
     ["embedding", "input_ids", "[0, 50)", "max"]),
    ("embedding position past the table", lambda: _with(embedding_case, 3, lambda p: p + 64), ValueError,
     ["embedding", "position_ids", "[0, 64) (the rows of position_embeddings)", "max 70"]),
    ("linear_norm norm", lambda: _with(linear_norm_case, 0, lambda x: x, norm="rmsnorm"), ValueError,
     ["linear_norm", "norm", "'nonorm', 'layernorm'", "'rmsnorm'"]),
    ("linear_norm dropout", lambda: _with(linear_norm_case, 0, lambda x: x, dropout_p=1.5), ValueError,
     ["linear_norm", "dropout_p", "[0, 1)", "1.5"]),
    ("ffn_stack act", lambda: _with(ffn_stack_case, 0, lambda x: x, act="tanh"), ValueError,
     ["ffn_stack", "act", "'relu', 'gelu'", "'tanh'"]),
    ("bottleneck_attention mode", lambda: _with(bottleneck_attention_case, 0, lambda h: h, mode="cross"), ValueError,
     ["bottleneck_attention", "mode", "'shared'", "'cross'"]),
]


def layernorm_case_(**kw):
    return CASES["layernorm"](**kw)


@pytest.mark.parametrize("label,build,exc,needles", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_bad_op_input(label, build, exc, needles):
    fn, args, kwargs = build()
    raises_naming(exc, needles, fn, *args, **kwargs)


# -- not errors: empty batches, non-contiguous / sliced / expanded inputs ----------------------------

# Which positional arguments of each op carry the batch dimension.
BATCHED = {"nonorm": (0, 3), "layernorm": (0, 3), "linear_norm": (0, 5), "attention": (0, 1, 2, 3),
           "bottleneck_attention": (0, 1), "ffn_stack": (0,), "embedding": (0, 2, 3)}


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("name", list(CASES))
def test_empty_batch_gives_an_empty_result(name, backend):
    fn, args, kwargs = CASES[name]()
    empty = tuple(a.detach()[:0].requires_grad_(a.requires_grad) if i in BATCHED[name] else a
                  for i, a in enumerate(args))
    with mbkernels.use_backend(backend):
        out, full = fn(*empty, **kwargs), fn(*args, **kwargs)
        out, full = (out[0], full[0]) if isinstance(out, tuple) else (out, full)
        assert out.shape == (0, *full.shape[1:]), (out.shape, full.shape)
        out.sum().backward()  # and its backward: gradients of the right shapes, all zero
    leaves = [t for a in empty for t in (a if isinstance(a, list) else [a])
              if isinstance(t, torch.Tensor) and t.requires_grad]
    assert all(t.grad is None or (t.grad.shape == t.shape and not t.grad.any()) for t in leaves)


def test_empty_batch_through_the_model(model):
    with torch.no_grad():
        out = model(torch.ones(0, 5, dtype=torch.long), attention_mask=torch.ones(0, 5))
    assert out.last_hidden_state.shape == (0, 5, 512) and out.pooler_output.shape == (0, 512)
    mlm = MobileBertForMaskedLM(small(MobileBertConfig.mobilebert()))
    logits = mlm(torch.ones(0, 5, dtype=torch.long)).logits
    assert logits.shape == (0, 5, 1000)


def _matches_reference(fn, args, kwargs, tol=1e-5):
    """The fused result on these (strided) inputs equals the float64 reference on contiguous copies."""
    def contiguous64(a):
        if isinstance(a, list):
            return [contiguous64(t) for t in a]
        if isinstance(a, torch.Tensor):
            a = a.detach().contiguous()
            return a.double() if a.is_floating_point() else a
        return a

    with torch.no_grad():
        out = fn(*args, **kwargs)
        with mbkernels.use_backend("reference"):
            ref = fn(*[contiguous64(a) for a in args], **kwargs)
    out, ref = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
    assert rel_err(out, ref) <= tol, rel_err(out, ref)


def test_sliced_transposed_and_expanded_inputs_give_correct_results():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(3, 9, 300, generator=g)
    # nonorm: x a strided slice, weight and bias expanded from one element, residual transposed storage.
    x = big[:, ::2, 10:138]
    residual = torch.randn(128, 5, 3, generator=g).permute(2, 1, 0)
    _matches_reference(ops.nonorm, (x, torch.full((1,), 1.5).expand(128), torch.zeros(()).expand(128), residual), {})
    # linear_norm: x sliced along features, weight a transposed view.
    fn, args, kw = linear_norm_case()
    w_t = args[1].detach().t().contiguous().t()
    _matches_reference(fn, (torch.randn(2, 7, 1024, generator=g)[..., ::2], w_t, *args[2:]), kw)
    # attention: q, k, v as [B, S, H, D] transposed to [B, H, S, D] (what the layer does), a sliced mask.
    qkv = torch.randn(2, 7, 3, 4, 32, generator=g)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    mask = torch.ones(2, 14, dtype=torch.bool)[:, ::2]
    mask[1, 5:] = False
    _matches_reference(ops.attention, (q, k, v, mask), {})
    # ffn_stack: x every other row of a bigger batch.
    fn, args, kw = ffn_stack_case()
    _matches_reference(fn, (torch.randn(2, 14, 128, generator=g)[:, ::2], *args[1:]), kw)
    # embedding: position_ids expanded from one row.
    fn, args, kw = embedding_case()
    _matches_reference(fn, (args[0], args[1], args[2], torch.arange(7)[None].expand(2, 7), *args[4:]), kw)


# -- from_pretrained ------------------------------------------------------------------------------

@pytest.fixture()
def saved(tmp_path, model):
    model.save_pretrained(tmp_path)
    return tmp_path


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_from_pretrained_bad_folders(tmp_path, saved):
    raises_naming(FileNotFoundError, ["folder", "a directory with config.json", "nope"],
                  MobileBertModel.from_pretrained, tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_naming(FileNotFoundError, ["folder", "config.json", str(empty)], MobileBertModel.from_pretrained, empty)
    (saved / "model.safetensors").rename(tmp_path / "aside.safetensors")
    raises_naming(FileNotFoundError, ["folder", "model.safetensors or pytorch_model.bin", "found neither"],
                  MobileBertModel.from_pretrained, saved)


def test_from_pretrained_config_inconsistent_with_the_weights(saved):
    _edit_config(saved, intra_bottleneck_size=64)
    raises_naming(ValueError, ["checkpoint key", "expected shape (64,) from config.json", "got (128,)",
                               "inconsistent"], MobileBertModel.from_pretrained, saved)
    _edit_config(saved, intra_bottleneck_size=128, num_hidden_layers=3)
    raises_naming(ValueError, ["missing keys", "encoder.layer.2."], MobileBertModel.from_pretrained, saved, strict=True)
    _edit_config(saved, num_hidden_layers=2, num_attention_heads=5)
    raises_naming(ValueError, ["MobileBertConfig.num_attention_heads", "divisor", "5"],
                  MobileBertModel.from_pretrained, saved)


def test_from_pretrained_truncated_or_corrupt_files(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    raises_naming(ValueError, [str(weights), "expected a valid safetensors file", "could not read it"],
                  MobileBertModel.from_pretrained, saved)
    weights.write_bytes(b"\xff" * 8 + data[8:])  # the header length: garbage
    raises_naming(ValueError, [str(weights), "expected a valid safetensors file"], MobileBertModel.from_pretrained, saved)
    weights.unlink()
    bin_path = saved / "pytorch_model.bin"
    torch.save({"x": torch.ones(3)}, bin_path)
    bin_path.write_bytes(bin_path.read_bytes()[:200])
    raises_naming(ValueError, [str(bin_path), "expected a valid PyTorch state dict", "could not read it"],
                  MobileBertModel.from_pretrained, saved)
    (saved / "config.json").write_text("{not json")
    raises_naming(ValueError, ["config.json", "not valid JSON", "line 1"], MobileBertModel.from_pretrained, saved)


# -- the command line -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needles", [
    (["demo", "--seq", "0"], ["--seq", "in [1, 512]", "got 0"]),
    (["demo", "--seq", "513"], ["--seq", "in [1, 512]", "got 513"]),
    (["demo", "--layers", "0"], ["--layers", ">= 1", "got 0"]),
    (["demo", "--batch", "two"], ["--batch", "invalid integer value", "'two'"]),
    (["demo", "--repeats", "-1"], ["--repeats", ">= 1", "got -1"]),
])
def test_cli_demo_arguments(argv, needles, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)


def _distill(tmp_path, corpus, vocab, *extra):
    return ["distill", "--output-dir", str(tmp_path / "out"), "--corpus", corpus, "--tokenizer", vocab,
            "--strategy", "pretrain", "--steps", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("The cat sat on the mat. It was warm.\n\nDogs bark at night. Birds sing at dawn.\n")
    return str(path)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    # A real WordPiece vocabulary: bert-base-uncased's, shipped with the MiniLM package.
    from test_distill_support import minilm_dir

    return str(minilm_dir())


@pytest.mark.parametrize("change,needles", [
    ({"--tokenizer": "/no/such/folder"}, ["tokenizer", "a folder with vocab.txt", "'/no/such/folder'"]),
    ({"--corpus": "/no/such/text.txt"}, ["corpus", "'/no/such/text.txt'", "neither a file nor a folder"]),
    ({"--resume": "/no/such/step.pt"}, ["resume", "an existing checkpoint file", "'/no/such/step.pt'"]),
    ({"--set": "num_attention_heads=3"}, ["MobileBertConfig.num_attention_heads", "divisor", "3"]),
    ({"--student": "bert_huge"}, ["student", "a preset", "'bert_huge'"]),
    ({"--max-seq-len": "600"}, ["max_seq_len", "max_position_embeddings=512", "600"]),
    ({"--batch-size": "0"}, ["batch_size", "positive multiple", "0"]),
])
def test_cli_distill_arguments(tmp_path, corpus, vocab, change, needles, capsys):
    argv = _distill(tmp_path, corpus, vocab)
    for option, value in change.items():
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mbkernels distill: error: ")
    for needle in needles:
        assert needle in err, (needle, err)


def test_cli_missing_tokenizer_in_a_real_process(tmp_path, corpus):
    proc = subprocess.run([sys.executable, "-m", "mbkernels.cli", *_distill(tmp_path, corpus, str(tmp_path / "none"))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"tokenizer: expected a folder with vocab.txt or a vocab.txt file, got '{tmp_path / 'none'}'" in proc.stderr
