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


@pytest.fixture(params=mbkernels.backend.supported_isas())
def isa(request):
    """Each ISA this machine runs, made active (the autouse fixture above restores the default)."""
    mbkernels.backend._C.set_isa(request.param)
    assert mbkernels.backend.active_isa() == request.param
    return request.param


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)
