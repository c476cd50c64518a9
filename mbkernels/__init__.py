"""mbkernels: fast MobileBERT-style bottleneck transformers on CPUs and GPUs."""

__version__ = "0.1.0"

from mbkernels.backend import use_backend
from mbkernels.checks import NonFiniteError, check_finite
from mbkernels.config import MobileBertConfig
from mbkernels import ops
from mbkernels.info import info
from mbkernels.modeling import MobileBertEmbeddings, MobileBertEncoder, MobileBertLayer, MobileBertModel, NoNorm
from mbkernels.heads import (
    MobileBertForMaskedLM,
    MobileBertForNextSentencePrediction,
    MobileBertForPreTraining,
    MobileBertForQuestionAnswering,
    MobileBertForSequenceClassification,
    MobileBertForTokenClassification,
)
from mbkernels.hf import from_hf, to_hf
from mbkernels.patch import patch_hf, unpatch_hf
from mbkernels.export import export_onnx, export_program
from mbkernels.quantize import quantize

__all__ = [
    "__version__", "use_backend", "check_finite", "NonFiniteError", "MobileBertConfig", "ops", "info", "NoNorm",
    "MobileBertEmbeddings",
    "MobileBertLayer", "MobileBertEncoder", "MobileBertModel", "MobileBertForPreTraining",
    "MobileBertForMaskedLM", "MobileBertForNextSentencePrediction", "MobileBertForSequenceClassification",
    "MobileBertForTokenClassification", "MobileBertForQuestionAnswering",
    "patch_hf", "unpatch_hf", "from_hf", "to_hf", "export_program", "export_onnx", "quantize",
]
