"""The command line: real subprocess runs, output and exit codes."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=600)


def test_models_table():
    r = run("models")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    v1 = next(l for l in lines if l.startswith("mobilenet_v1 ") and " 224 " in l)
    assert "4.232" in v1 and "568.7" in v1 and "OFF" not in r.stdout
    assert sum(" ok " in f" {l} " for l in lines) >= 38


def test_profile_v1_reproduces_table_2():
    r = run("profile", "mobilenet_v1")
    assert r.returncode == 0, r.stderr
    assert "stages.0.0.conv_dw" in r.stdout
    breakdown = {l.split("  ")[0]: l.split() for l in r.stdout.splitlines()[-4:]}
    assert breakdown["pointwise conv"][-3] == "94.86"
    assert breakdown["depthwise conv"][-3] == "3.06"
    assert breakdown["fully connected"][-3] == "0.18"


def test_unknown_model_is_a_clean_error():
    r = run("profile", "mobilenet_v9")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr and "Traceback" not in r.stderr
