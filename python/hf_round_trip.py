"""Save an mbkernels MobileBERT in Hugging Face format, load it with transformers, compare outputs,
and run it on every backend this machine has.

    python python/hf_round_trip.py [--layers 24]
"""

import argparse
import tempfile

import torch
import transformers

import mbkernels
from mbkernels import MobileBertConfig, MobileBertForMaskedLM
from mbkernels.testing import rel_err

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--layers", type=int, default=24)
args = parser.parse_args()

torch.manual_seed(0)
model = MobileBertForMaskedLM(MobileBertConfig.mobilebert(num_hidden_layers=args.layers)).eval()
ids = torch.randint(1, 30522, (2, 64))
mask = torch.ones(2, 64)
mask[1, 40:] = 0

with tempfile.TemporaryDirectory() as folder:
    model.save_pretrained(folder)
    theirs = transformers.MobileBertForMaskedLM.from_pretrained(folder).eval()
    ours = MobileBertForMaskedLM.from_pretrained(folder)

with torch.inference_mode():
    expected = theirs(ids, attention_mask=mask).logits
    for backend in ("fused", "reference"):
        mbkernels.backend.last_ran.clear()
        with mbkernels.use_backend(backend):
            got = ours(ids, attention_mask=mask).logits
        print(f"{backend:>9}: per-row relative error vs transformers {rel_err(got, expected):.2e}")
        for op, ran in sorted(mbkernels.backend.last_ran.items()):
            print(f"           {op} ran on {ran}")
