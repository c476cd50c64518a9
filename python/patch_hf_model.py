"""Patch a Hugging Face MobileBERT in place with mbkernels' fused ops, check it against itself
unpatched (outputs, attentions, a training step's gradients), time both, unpatch it; then convert it
to an mbkernels model and export that to ONNX for ONNX Runtime.

    python python/patch_hf_model.py [--layers 24] [--onnx]
"""

import argparse
import copy
import tempfile
import time

import torch
import transformers

import mbkernels
from mbkernels.testing import rel_err

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--layers", type=int, default=24)
parser.add_argument("--onnx", action="store_true", help="also export to ONNX and run it in ONNX Runtime")
args = parser.parse_args()

torch.manual_seed(0)
# Any transformers MobileBert* model; offline here, so the released architecture with random weights
# (with weights: transformers.MobileBertForMaskedLM.from_pretrained(folder)).
config = transformers.MobileBertConfig(num_hidden_layers=args.layers, classifier_activation=False,
                                       attention_probs_dropout_prob=0.0)
config._attn_implementation = "eager"  # HF returns attention probabilities only in eager mode
student = transformers.MobileBertForMaskedLM(config).train()
teacher = copy.deepcopy(student)  # stays unpatched: patching is per instance, never per class

ids = torch.randint(1, config.vocab_size, (2, 64))
mask = torch.ones(2, 64)
mask[1, 40:] = 0

mbkernels.patch_hf(student)
out = student(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
ref = teacher(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
print(f"logits       rel. error vs unpatched: {rel_err(out.logits, ref.logits):.2e}")
print(f"attentions   rel. error vs unpatched: {max(rel_err(a, b) for a, b in zip(out.attentions, ref.attentions)):.2e} "
      f"({len(out.attentions)} layers)")
print(f"hidden state rel. error vs unpatched: "
      f"{max(rel_err(a, b) for a, b in zip(out.hidden_states, ref.hidden_states)):.2e} ({len(out.hidden_states)} tensors)")
# A training step's gradients, against the float64 truth (fp32 weight gradients that cancel differ
# between any two summation orders, HF's own included, so both fp32 models are judged against it).
truth = copy.deepcopy(teacher).double()
weights = torch.randn(out.logits.shape)
for model, logits in ((student, out.logits), (teacher, ref.logits),
                      (truth, truth(ids, attention_mask=mask.double()).logits)):
    (logits * weights.to(logits.dtype)).sum().backward()
exact = dict(truth.named_parameters())


def worst_grad(model):  # attention.self.key.bias is skipped: its gradient is analytically zero
    return max(rel_err(p.grad, exact[n].grad) for n, p in model.named_parameters()
               if p.grad is not None and not n.endswith("key.bias"))


print(f"gradients    rel. error vs float64:   {worst_grad(student):.2e} (unpatched HF fp32: {worst_grad(teacher):.2e})")

def median_ms(model, repeats=5):
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            model(ids, attention_mask=mask)
            times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times[1:])[repeats // 2]


student.eval()
teacher.eval()
print(f"inference 2x64, {args.layers} layers, rough: patched {median_ms(student):.1f} ms, unpatched "
      f"{median_ms(teacher):.1f} ms (the benchmark: pytest bench -k model_hf_patched --benchmark-only)")
mbkernels.unpatch_hf(student)
with torch.inference_mode():
    same = torch.equal(student(ids, attention_mask=mask).logits, teacher(ids, attention_mask=mask).logits)
print(f"unpatched again: bit-identical to the never-patched copy: {same}")
assert same

if args.onnx:
    import onnxruntime

    ours = mbkernels.from_hf(student).eval()  # our MobileBertForMaskedLM, weights copied
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/model.onnx"
        names = mbkernels.export_onnx(ours, path)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.long().numpy(), "token_type_ids": (0 * ids).numpy()}
    logits = torch.from_numpy(session.run(None, feeds)[names.index("logits")])
    with torch.inference_mode():
        print(f"ONNX Runtime rel. error vs mbkernels: {rel_err(logits, ours(ids, attention_mask=mask).logits):.2e}")
