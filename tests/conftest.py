"""Shared fixtures: small seeded data so tests are fast and deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture
def binary_x() -> torch.Tensor:
    """(40, 12) binary data with structure (two prototypes with flips)."""
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(2, 12, generator=g) > 0.5).float()
    x = protos[torch.arange(40) % 2]
    flips = torch.rand(40, 12, generator=g) < 0.1
    return torch.where(flips, 1 - x, x)


@pytest.fixture(scope="session")
def digits():
    from ppl_vae.data import load_dataset

    return load_dataset("digits", binarize="dynamic", seed=0)
