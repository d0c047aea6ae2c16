"""Weights from a URL: downloaded once into the cache, hash-checked, never half-written (loopback server only)."""

from __future__ import annotations

import pytest
import torch

import mobilenets
from mobilenets import MobileNetsError, create_model
from mobilenets.weights import resolve_source
from mobilenets.weights.source import sha256sum


def _checkpoint(path):
    model = create_model("mobilenet_v1", width=0.25, num_classes=3)
    mobilenets.save_checkpoint(model, path)
    return model


def test_url_downloads_once_then_uses_cache(server, cache):
    base, root, requests = server
    model = _checkpoint(root / "v1.safetensors")
    digest = sha256sum(root / "v1.safetensors")
    url = f"{base}/v1.safetensors#sha256={digest}"
    a = create_model("mobilenet_v1", weights=url)
    b = create_model("mobilenet_v1", weights=url)
    assert requests == ["/v1.safetensors"]  # the second load came from the cache
    for k, v in model.state_dict().items():
        assert torch.equal(a.state_dict()[k], v) and torch.equal(b.state_dict()[k], v)
    cached = list(cache.rglob("*.safetensors"))
    assert len(cached) == 1 and sha256sum(cached[0]) == digest
    from mobilenets.errors import file_mode

    assert cached[0].stat().st_mode & 0o777 == file_mode()  # open()'s mode under the umask, not mkstemp's 0600
    assert resolve_source(f"{base}/v1.safetensors", sha256=digest) == cached[0]


def test_hash_mismatch_fails_and_caches_nothing(server, cache):
    base, root, requests = server
    _checkpoint(root / "v1.safetensors")
    with pytest.raises(MobileNetsError, match="sha256 mismatch"):
        create_model("mobilenet_v1", weights=f"{base}/v1.safetensors#sha256={'0' * 64}")
    assert not [p for p in cache.rglob("*") if p.is_file()]  # no partial or unverified file left behind


def test_download_errors_are_one_line(server, cache):
    base, _, _ = server
    with pytest.raises(MobileNetsError, match="download failed"):
        resolve_source(f"{base}/missing.pth")
    with pytest.raises(MobileNetsError, match="differ"):
        resolve_source(f"{base}/x.pth#sha256={'1' * 64}", sha256="2" * 64)


def test_local_path_checks(tmp_path):
    _checkpoint(tmp_path / "v1.safetensors")
    with pytest.raises(MobileNetsError, match="sha256 mismatch"):
        mobilenets.inspect_weights(tmp_path / "v1.safetensors", sha256="0" * 64)
    with pytest.raises(MobileNetsError, match="is a directory"):
        mobilenets.inspect_weights(tmp_path)
    with pytest.raises(MobileNetsError, match="no such file"):
        mobilenets.inspect_weights(tmp_path / "nope.pth")
