import os

import pytest
import torch

import mbkernels

# Property tests (tests/test_properties.py): few fixed examples in CI, many by hand with
# `--hypothesis-profile=full`. Registered here: the hypothesis plugin loads the profile at startup.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is pinned in .ci/requirements.txt
    pass
else:
    _quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=6, deadline=None, derandomize=True, print_blob=True,
                              suppress_health_check=_quiet)
    settings.register_profile("full", max_examples=300, deadline=None, print_blob=True, suppress_health_check=_quiet)
    settings.load_profile(os.environ.get("MBK_HYPOTHESIS_PROFILE", "ci"))


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
