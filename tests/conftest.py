"""Shared test fixtures: the model list, and the real published weights in ../shared (skipped if absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mobilenets

ALL_MODELS = mobilenets.list_models()
SHARED = Path(__file__).resolve().parents[2] / "shared"
PRETRAINED = SHARED / "data" / "pretrained"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def pretrained_dir() -> Path:
    if not PRETRAINED.is_dir():
        pytest.skip("../shared/data/pretrained is not present")
    return PRETRAINED
