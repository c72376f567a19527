"""Shared fixtures. Tests that need ``data/`` fail with the `dvc pull` hint when it is absent."""

from __future__ import annotations

import pytest
import torch

from groupsc.paths import data_dir


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def have_data() -> bool:
    if not (data_dir() / "test").is_dir():
        pytest.fail("data/ is missing: run `dvc pull` (or `make data`) before the tests")
    return True


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP synchronisation overhead on a busy 2-core box
    (two threads made gradcheck about 20x slower there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
