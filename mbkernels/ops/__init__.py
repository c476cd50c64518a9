"""mbkernels.ops: MobileBERT's fused blocks as autograd-enabled `torch.library` custom ops.

The frozen schemas, argument by argument, are in `SCHEMAS.md` beside this file. Each public
function here takes the reference path under `use_backend("reference")` and the custom op
`torch.ops.mbkernels.<name>` otherwise.
"""

from mbkernels.ops.attention import attention
from mbkernels.ops.bottleneck_attention import bottleneck_attention
from mbkernels.ops.embedding import embedding
from mbkernels.ops.encoder import encoder
from mbkernels.ops.ffn_stack import ffn_stack
from mbkernels.ops.linear_norm import linear_norm
from mbkernels.ops.nonorm import layernorm, nonorm
from mbkernels.ops._registry import OPS
from mbkernels.ops import autocast as _autocast  # noqa: E402,F401  registers every op above for torch.autocast


def norm(x, weight, bias, residual=None, kind: str = "nonorm", eps: float = 1e-12):
    """NoNorm or LayerNorm by name, as the configs say it."""
    if kind == "nonorm":
        return nonorm(x, weight, bias, residual)
    if kind == "layernorm":
        return layernorm(x, weight, bias, residual, eps)
    raise ValueError(f"norm: expected 'nonorm' or 'layernorm', got {kind!r}")


__all__ = ["nonorm", "layernorm", "norm", "linear_norm", "bottleneck_attention", "attention", "ffn_stack",
           "embedding", "encoder", "OPS"]
