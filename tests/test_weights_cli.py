"""``mobilenets convert / inspect / predict`` end to end, as a user runs them (subprocess), bad input included."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mobilenets import IMAGENET, create_model
from mobilenets.checkpoint import read_checkpoint
from mobilenets.labels import imagenet_labels

timm = pytest.importorskip("timm")


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mobilenets", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    torch.save(timm.create_model("mobilenetv2_035").state_dict(), d / "timm.pth")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(d / "img.png")
    (d / "notes.txt").write_text("not an image\n")
    (d / "random.bin").write_bytes(np.random.default_rng(1).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    return d


@pytest.mark.slow
def test_convert_inspect_predict(files, tmp_path):
    r = run("convert", files / "timm.pth", tmp_path / "v2.safetensors")
    assert r.returncode == 0, r.stderr
    assert "timm weights: mobilenet_v2 width 0.35, 1000 classes" in r.stdout
    tensors, meta = read_checkpoint(tmp_path / "v2.safetensors")
    assert (meta.config.name, meta.config.width, meta.config.num_classes) == ("mobilenet_v2", 0.35, 1000)
    assert meta.class_names == list(imagenet_labels()) and meta.preprocessing == IMAGENET
    assert meta.extra["source_format"] == "timm"

    r = run("inspect", tmp_path / "v2.safetensors")
    assert r.returncode == 0 and "mobilenets weights: mobilenet_v2 width 0.35" in r.stdout

    r = run("predict", "--weights", tmp_path / "v2.safetensors", files / "img.png", "--top", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("img.png") and len(lines) == 4
    probs = [float(line.split()[0]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert all(line.split(None, 1)[1] in imagenet_labels() for line in lines[1:])


@pytest.mark.slow
def test_predict_published_h5(pretrained_dir):
    r = run("predict", "--weights", pretrained_dir / "mobilenet_v1_0.25_224.h5", pretrained_dir / "photos" / "bird.bmp")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split(None, 1)[1] == "chickadee"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["truncated", "random bytes", "not an image", "directory weights", "directory image"])
def test_bad_input_is_one_line_error(files, tmp_path, case):
    ck = tmp_path / "ok.safetensors"
    from mobilenets import save_checkpoint

    save_checkpoint(create_model("mobilenet_v1", width=0.25, num_classes=4), ck)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(ck.read_bytes()[:5000])
    weights, image = {
        "truncated": (truncated, files / "img.png"),
        "random bytes": (files / "random.bin", files / "img.png"),
        "not an image": (ck, files / "notes.txt"),
        "directory weights": (tmp_path, files / "img.png"),
        "directory image": (ck, tmp_path),
    }[case]
    r = run("predict", "--weights", weights, image)
    # an unreadable image is reported and the others go on: exit 1; a weights problem stops everything: 2
    assert r.returncode == (1 if case in ("not an image", "directory image") else 2)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("mobilenets predict: error: "), r.stderr
