"""The command line: real subprocess runs, output and exit codes."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=600)


def test_models_table():
    r = run("models", "--task", "classification")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    v1 = next(l for l in lines if l.startswith("mobilenet_v1 ") and " 224 " in l)
    assert "4.232" in v1 and "568.7" in v1 and "OFF" not in r.stdout
    assert sum(" ok " in f" {l} " for l in lines) >= 38


def test_models_segmentation_rows_and_dense_profile():
    r = run("models", "--task", "segmentation")
    assert r.returncode == 0, r.stderr
    assert "V2 Table 7" in r.stdout and "V3 Tables 7-8" in r.stdout and "OFF" not in r.stdout
    tv = next(l for l in r.stdout.splitlines() if l.startswith("torchvision meta"))
    assert "3.222" in tv and tv.rstrip().endswith("ok")
    r = run("profile", "ssdlite_mobilenet_v3_large", "--resolution", "320", "--num-classes", "91", "--summary")
    assert r.returncode == 0, r.stderr
    assert "613,143,104 MAdds" in r.stdout  # V3 Table 6's V3-Large + SSDLite (0.62B printed; see detection/costs.py)


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
