"""Shared test setup. Area fixtures live in tests/fixtures/*.py (loaded below)."""

import os

import pytest
import torch

pytest_plugins = [
    "tests.fixtures.flame",
    "tests.fixtures.models",
    "tests.fixtures.scenes",
    "tests.fixtures.diffusion",
]

# Tests run offline, like CI: nothing may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# One torch thread per test process, set once here and never raised again: pytest-xdist runs
# one worker per core, the tests' tensors are small (more threads only add contention), and
# changing the thread count mid-process upsets MKL's batched LU solves (seen in fit-flame).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own avatarcli cache dir: no test sees the user's models or another test's."""
    cache = tmp_path / "avatar-cache"
    monkeypatch.setenv("AVATAR_CACHE", str(cache))
    monkeypatch.delenv("AVATAR_FLAME", raising=False)
