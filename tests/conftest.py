import os

import pytest
import torch

# One test process per core (scripts/test.sh runs pytest-xdist with -n auto): each process, and each
# process a test starts, gets its share of the cores. Two 1-thread processes train these small models
# about 1.6x faster than one 2-thread process.
_threads = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ["OMP_NUM_THREADS"] = str(_threads)
torch.set_num_threads(_threads)


@pytest.fixture
def seeded():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Each test its own SELFSUP_CACHE: no test reads another's cached folder index or writes to ~/.cache."""
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def spied(monkeypatch):
    """Every RGB-only operation (tests.test_multiband.RGB_ONLY) records (its name, the channel count of what it is
    applied to)."""
    from tests.test_multiband import RGB_ONLY

    calls = []
    for cls in RGB_ONLY:
        def forward(self, *inputs, _real=cls.forward, **kwargs):
            calls.append((type(self).__name__, inputs[0].shape[-3]))
            return _real(self, *inputs, **kwargs)
        monkeypatch.setattr(cls, "forward", forward)
    return calls
