"""Fine-tuning as users do it (issue 15): batch-norm statistics of folded / missing / short-schedule weights,
extending a run with --resume, --weights naming the model, --device."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mobilenets
from mobilenets import MobileNetsError, TrainConfig
from mobilenets.checkpoint import save_checkpoint
from mobilenets.training.batchnorm import (batchnorms, folded_batchnorms, missing_statistics, precise_bn,
                                           unfold_batchnorm)

from .test_train import make_folder, tiny

PHOTO_CLASSES = ("brick.png", "grass.png", "gravel.png", "coffee.png")  # photos inside the scikit-image wheel


def make_photo_folder(root: Path, *, n_train: int = 100, n_val: int = 30, size: int = 112) -> Path:
    """A 4-class ImageFolder of random crops (20%..60% of the shorter side) of four photographs that ship with
    scikit-image (textures and a coffee cup: ImageNet features tell them apart), train and val crops from
    separate random streams; deterministic, nothing downloaded."""
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    for ci, name in enumerate(PHOTO_CLASSES):
        with Image.open(folder / name) as im:
            im = im.convert("RGB")
        for part, n, stream in (("train", n_train, 0), ("val", n_val, 1)):
            rng = np.random.default_rng([ci, stream])
            d = root / part / name.split(".")[0]
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = min(im.size) * rng.uniform(0.2, 0.6)
                x0, y0 = rng.uniform(0, im.width - side), rng.uniform(0, im.height - side)
                im.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side)).save(d / f"{i}.png")
    return root


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(mobilenets.__file__).parents[1]), **(env or {})}
    return subprocess.run([sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=600,
                          env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("digits3"))


# ------------------------------------------------------------------------------------------------ batch norm
def _trained_like(seed: int = 0) -> nn.Module:
    """A small model whose BN parameters and statistics are arbitrary (as trained ones are), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    model = mobilenets.create_model("mobilenet_v3_small", width=0.35, num_classes=5)
    with torch.no_grad():
        for m in batchnorms(model).values():
            c = m.num_features
            m.weight.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.copy_(0.2 * torch.randn(c, generator=g))
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return model.eval()


def _train_mode(model: nn.Module) -> nn.Module:
    """A copy whose batch norms are in train mode, normalising by batch statistics (dropout stays off; the
    forward updates the copy's running statistics, not the model's)."""
    out = copy.deepcopy(model).eval()
    for m in batchnorms(out).values():
        m.train()
    return out


def _fold(model: nn.Module) -> nn.Module:
    """What a TFLite file holds, loaded back: each BN folded into the conv before it, identity statistics."""
    from mobilenets.weights.layout import weighted_modules

    bns = batchnorms(model)
    with torch.no_grad():
        for _, conv, bn_name in weighted_modules(model):
            if bn_name is None:
                continue
            bn = bns[bn_name]
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(s.view(-1, 1, 1, 1))
            bn.bias.copy_(bn.bias - bn.running_mean * s)
            bn.weight.fill_(1.0)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    return model


def test_unfold_keeps_the_eval_function_and_makes_train_mode_compute_it():
    model = _fold(_trained_like())
    x = torch.randn(48, 3, 64, 64)
    with torch.no_grad():
        published = model(x)
    assert len(folded_batchnorms(model)) == len(batchnorms(model)) and not missing_statistics(model)
    with torch.no_grad():  # what training sees without unfolding: every BN renormalises, another function
        assert not torch.allclose(_train_mode(model)(x), published, atol=0.1)
    assert unfold_batchnorm(model, folded_batchnorms(model), [x[:24], x[24:]]) == 48
    assert model.training is False and not folded_batchnorms(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), published, rtol=1e-4, atol=1e-4)  # eval mode: the same function
        # train mode on these images too
        torch.testing.assert_close(_train_mode(model)(x), published, rtol=1e-3, atol=1e-3)


def test_unfold_published_tflite_weights(pretrained_dir):
    """The published V3-Small TFLite file: every BN is folded; unfolded, train mode computes the published
    function on the images measured, and eval mode is unchanged."""
    pytest.importorskip("ai_edge_litert")
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, report = mobilenets.model_from_weights(pretrained_dir / "mobilenet_v3_small_1.0_224.uint8.tflite")
    model.eval()
    pre = report.info.preprocessing
    photos = sorted((pretrained_dir / "photos").iterdir())
    x = torch.stack([pre.transform()(Image.open(p).convert("RGB")) for p in photos])
    x = torch.cat([x, x.flip(-1)])
    folded = folded_batchnorms(model)
    assert len(folded) == len(batchnorms(model)) == 34
    with torch.no_grad():
        published = model(x)
        assert (_train_mode(model)(x).argmax(1) != published.argmax(1)).any()  # folded BN in train mode
    unfold_batchnorm(model, folded, [x])
    with torch.no_grad():
        torch.testing.assert_close(model(x), published, rtol=1e-3, atol=1e-3)
        assert torch.equal(_train_mode(model)(x).argmax(1), published.argmax(1))


def test_precise_bn_recomputes_statistics_and_restores_modes():
    model = _trained_like()
    assert not missing_statistics(model) and not folded_batchnorms(model)
    for m in batchnorms(model).values():  # trained affine, statistics never tracked
        m.reset_running_stats()
    assert len(missing_statistics(model)) == len(batchnorms(model))
    x = torch.randn(32, 3, 64, 64)
    model.stem.eval()  # e.g. a frozen part: its mode is kept
    model.stages.train()
    assert precise_bn(model, [x]) == 32
    assert not missing_statistics(model)
    assert model.stem.training is False and model.stages.training is True
    assert all(m.momentum == 0.1 for m in batchnorms(model).values())
    with torch.no_grad():  # the running statistics are this batch's: eval mode computes what train mode does
        torch.testing.assert_close(copy.deepcopy(model).eval()(x), _train_mode(model)(x), rtol=0.02, atol=0.02)
    # only the modules asked for change
    before = {k: v.clone() for k, v in model.state_dict().items()}
    precise_bn(model, [torch.randn(8, 3, 64, 64) * 3], modules=[model.stages[-1]])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(f"stages.{len(model.stages) - 1}.") for k in changed)
    assert precise_bn(model, []) == 0 and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()
                                              if k.startswith("stem."))


def test_fresh_layers_are_neither_folded_nor_missing():
    model = mobilenets.create_model("mobilenet_v2", width=0.35, num_classes=3)
    assert folded_batchnorms(model) == [] and missing_statistics(model) == []
