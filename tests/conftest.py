"""Shared test fixtures: the model list, and the real published weights in ../shared (skipped if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import mobilenets

ALL_MODELS = mobilenets.list_models()
SHARED = Path(__file__).resolve().parents[2] / "shared"
PRETRAINED = SHARED / "data" / "pretrained"

# One intra-op thread per test process: the suite runs as `pytest -n 2` on 2 cores, and two workers with two
# spinning threads each make small CPU convolutions ~100x slower (measured: 1.7 s vs 0.02 s for one
# mobilenet_v1 forward at 64x64).
# Subprocesses (the CLI tests) inherit the same limit through the environment.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def pretrained_dir() -> Path:
    if not PRETRAINED.is_dir():
        pytest.skip("../shared/data/pretrained is not present")
    return PRETRAINED
