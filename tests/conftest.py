"""Shared test fixtures: the model list, the real published weights in ../shared (skipped if absent), a loopback
HTTP server and an empty download cache."""

from __future__ import annotations

import functools
import http.server
import os
import threading
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


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over tmp_path/www standing in for the weight hosts; yields (base URL, the served
    folder, the list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache (MOBILENETS_CACHE) for the test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("MOBILENETS_CACHE", str(d))
    return d


def cli(capsys, *args) -> tuple[int, str, str]:
    """``mobilenets ARGS`` in-process: (exit code, stdout, stderr)."""
    from mobilenets.cli import main

    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err
