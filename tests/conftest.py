import os

import pytest
import torch

import mbkernels



@pytest.fixture(autouse=True)
def _seed_and_restore():
    """Each test starts from a fixed seed, the default backend and the default ISA."""
    torch.manual_seed(0)
    isa = mbkernels.backend.active_isa()
    yield
    if isa is not None:
        mbkernels.backend._C.set_isa(isa)


def cpu_isas() -> list[str]:
    """Every ISA this machine can run (empty without the extension)."""
    return mbkernels.backend.supported_isas()


requires_C = pytest.mark.skipif(mbkernels.backend._C is None, reason="mbkernels._C is not built")
SLOW = os.environ.get("MBK_SLOW") == "1"
