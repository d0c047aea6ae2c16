"""Export: batch-norm folding, each format verified in its runtime, int8 on digits, the export CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mobilenets
from mobilenets.checkpoint import CheckpointMeta, save_checkpoint
from mobilenets.digits import DigitsDataset
from mobilenets.errors import MobileNetsError
from mobilenets.export import export_model, fold_batchnorm, load_artifact
from mobilenets.export.data import load_images
from mobilenets.preprocess import IMAGENET

from .conftest import ALL_MODELS

SIZE = 64  # small inputs keep the exports quick; every model reduces 64 -> 2 at stride 32


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding them is really exercised."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def small(name: str, *, tf_padding: bool = False) -> nn.Module:
    return _randomize_bn(mobilenets.create_model(name, width=0.5, num_classes=10, tf_padding=tf_padding))


@pytest.mark.parametrize("tf_padding", [False, True])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_fold_batchnorm_preserves_outputs(name, tf_padding):
    model = small(name, tf_padding=tf_padding)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    # only the pre-norms of V4's attention blocks stay (no conv before them)
    assert all(name.endswith(".norm") and type(folded.get_submodule(name.rpartition(".")[0])).__name__ == "MobileMQA"
               for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 0 and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # input untouched
    # the convs keep their names (and gain biases); nothing else is renamed
    conv_keys = {k for k in before if ".bn" not in k and not k.endswith(("bn.weight", "bn.bias", "bn.running_mean",
                                                                          "bn.running_var", "num_batches_tracked"))}
    assert conv_keys <= set(folded.state_dict())
    x = torch.randn(2, 3, 72, 72)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_fold_batchnorm_rejects_a_bn_without_conv():
    with pytest.raises(ValueError, match="cannot fold"):
        fold_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm2d(4)))


def _check(report, fmt, dynamic):
    assert report.format == fmt and report.size_bytes > 0
    assert report.max_abs_diff <= 1e-4 * report.logit_scale
    assert (report.input_shape[0] == -1) == dynamic


@pytest.mark.parametrize("name", ALL_MODELS)
def test_onnx_export_every_model(name, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    tf = name.startswith("mobilenet_v3_large")  # one family through Conv2dSame's padding
    model = small(name, tf_padding=tf)
    report = export_model(model, tmp_path / "m.onnx", format="onnx", input_size=SIZE)
    _check(report, "onnx", dynamic=True)
    art = load_artifact(tmp_path / "m.onnx", "onnx")
    x = np.random.default_rng(0).standard_normal((5, 3, SIZE, SIZE)).astype(np.float32)  # another batch size
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(art(x), ref, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_torchscript_export_every_model(name, tmp_path):
    report = export_model(small(name), tmp_path / "m.pt", format="torchscript", input_size=SIZE)
    _check(report, "torchscript", dynamic=True)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,module,dynamic", [("tflite", "litert_torch", False),
                                                 ("executorch", "executorch.runtime", True)])
def test_mobile_formats(fmt, module, dynamic, tmp_path):
    pytest.importorskip(module)
    # V3 with TF "SAME" padding (dynamic F.pad) and h-swish / hard-sigmoid, from a checkpoint whose class names
    # and [-1, 1] preprocessing travel in the file's metadata
    ck = _named_checkpoint(small("mobilenet_v3_small", tf_padding=True), tmp_path)
    report = export_model(ck, tmp_path / f"m.{fmt}", format=fmt, input_size=SIZE)
    _check(report, fmt, dynamic)
    _check_metadata(tmp_path / f"m.{fmt}", fmt, report)


CLASSES = [f"digit {i}" for i in range(10)]


def _named_checkpoint(model: nn.Module, folder) -> str:
    from mobilenets.preprocess import TF_INCEPTION

    path = folder / "named.safetensors"
    save_checkpoint(model, path, CheckpointMeta(config=model.config, class_names=CLASSES, preprocessing=TF_INCEPTION))
    return path


def _check_metadata(path, fmt, report) -> None:
    """The metadata read back from the exported file (without running it) says what an app needs: the class
    names, the input layout and channel order, the resize / crop and the [-1, 1] scaling."""
    from mobilenets.export import read_metadata

    meta = read_metadata(path, fmt)
    assert meta == load_artifact(path, fmt).metadata
    assert meta["task"] == "classification" and meta["class_names"] == CLASSES and meta["outputs"] == ["logits"]
    assert meta["input_size"] == [SIZE, SIZE] and meta["preprocessing"]["crop"] == SIZE
    assert meta["preprocessing"]["mean"] == meta["preprocessing"]["std"] == [0.5, 0.5, 0.5]
    inp = meta["input"]
    assert (inp["layout"], inp["channel_order"], inp["dtype"]) == ("NCHW", "RGB", "float32")
    assert inp["scaling"].startswith("[-1, 1]") and inp["value_range"] == [[-1.0] * 3, [1.0] * 3]
    assert f"centre-crop {SIZE}x{SIZE}" in inp["resize"] and "10 class names" in report.summary()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_metadata_travels_with_the_file(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    ck = _named_checkpoint(small("mobilenet_v1"), tmp_path)
    report = export_model(ck, tmp_path / f"m.{fmt}", format=fmt, input_size=SIZE)
    _check_metadata(tmp_path / f"m.{fmt}", fmt, report)
    if fmt == "onnx":  # the plain ONNX way to see it: metadata_props, key "mobilenets"
        import json

        import onnx

        props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
        assert json.loads(props["mobilenets"])["class_names"] == CLASSES


def test_failed_check_fails_the_export(tmp_path, monkeypatch):
    """A file that computes something else must not pass: the check raises and nothing is written."""
    from mobilenets.export import core

    def wrong(model, x, path, dynamic, metadata=None):
        other = small("mobilenet_v3_small")
        other.classifier.bias.data += 1.0
        core._write_torchscript(fold_batchnorm(other), x, path, dynamic, metadata=metadata)

    monkeypatch.setitem(core._WRITERS, "torchscript", wrong)
    with pytest.raises(MobileNetsError, match="check failed"):
        export_model(small("mobilenet_v3_small"), tmp_path / "m.pt", format="torchscript", input_size=SIZE)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_clear_errors(tmp_path):
    model = small("mobilenet_v2")
    with pytest.raises(MobileNetsError, match="unknown format"):
        export_model(model, tmp_path / "m.x", format="coreml")
    with pytest.raises(MobileNetsError, match="int8 export is available"):
        export_model(model, tmp_path / "m.pt", format="torchscript", int8=True, calib="digits")
    with pytest.raises(MobileNetsError, match="calibration images"):
        export_model(model, tmp_path / "m.onnx", format="onnx", int8=True)
    with pytest.raises(MobileNetsError, match="no such folder"):
        export_model(model, tmp_path / "m.onnx", format="onnx", int8=True, calib=tmp_path / "nope")


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v2"])
def test_quant_friendly_activations_compute_the_same_function(name):
    """The int8 TFLite path rewrites h-swish / hard-sigmoid / ReLU6 into add/clamp/mul: same outputs, none of
    them left; the ExecuTorch one ReLU6 only."""
    from mobilenets.export.core import _quant_friendly_activations

    model = small(name)
    rewritten = _quant_friendly_activations(model)
    assert not any(isinstance(m, (nn.Hardswish, nn.Hardsigmoid, nn.ReLU6)) for m in rewritten.modules())
    assert any(isinstance(m, (nn.Hardswish, nn.ReLU6)) for m in model.modules())  # the input is left alone
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)
    # the ExecuTorch int8 path rewrites ReLU6 only (XNNPACK's quantizer takes h-swish as it is)
    relu6_only = _quant_friendly_activations(model, hard_swish=False)
    assert not any(isinstance(m, nn.ReLU6) for m in relu6_only.modules())
    assert sum(isinstance(m, (nn.Hardswish, nn.Hardsigmoid)) for m in relu6_only.modules()) == \
        sum(isinstance(m, (nn.Hardswish, nn.Hardsigmoid)) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(relu6_only(x), model(x), rtol=1e-5, atol=1e-5)


def test_benchmark_helpers():
    """calibrate_batchnorm sets each BN's statistics to the exact batch statistics of the images;
    time_interleaved calls every function warmup + runs times, plus one settling call per turn."""
    from mobilenets.export.bench import calibrate_batchnorm, time_interleaved

    model = mobilenets.create_model("mobilenet_v2", width=0.35, num_classes=10)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()
    seen = {}
    model.stem.conv.register_forward_hook(lambda m, i, o: seen.setdefault("stem", []).append(o.detach()))
    calibrate_batchnorm(model, images, batch=3)
    assert not model.training
    stem = torch.cat(seen["stem"])
    torch.testing.assert_close(model.stem.bn.running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    calls = [0, 0]
    medians = time_interleaved([lambda: calls.__setitem__(0, calls[0] + 1),
                                lambda: calls.__setitem__(1, calls[1] + 1)], warmup=2, runs=7, rounds=3,
                               settle_s=0.0)
    assert calls == [2 + 7 + 3, 2 + 7 + 3] and len(medians) == 2 and all(m >= 0 for m in medians)
    calls = [0]
    time_interleaved([lambda: calls.__setitem__(0, calls[0] + 1)], warmup=2, runs=7, rounds=3)
    assert calls == [9]  # nothing to settle with one function


# ------------------------------------------------------------------------------------------ int8 options


def _digits_model(name: str = "mobilenet_v3_small") -> nn.Module:
    """A small model with batch-norm statistics of real digits images (random weights otherwise)."""
    from mobilenets.export.bench import calibrate_batchnorm

    model = mobilenets.create_model(name, width=0.5, num_classes=10)
    digits = DigitsDataset("train", image_size=SIZE, transform=IMAGENET.with_size(SIZE).transform())
    calibrate_batchnorm(model, torch.stack([digits[i][0] for i in range(64)]).numpy())
    return model.eval()


def test_int8_options_are_checked(tmp_path):
    model = small("mobilenet_v3_small")
    common = dict(int8=True, calib="digits", input_size=SIZE)
    with pytest.raises(MobileNetsError, match="calibration method 'entropy' is not offered for executorch"):
        export_model(model, tmp_path / "m.pte", format="executorch", calib_method="entropy", **common)
    with pytest.raises(MobileNetsError, match="unknown float part 'head'"):
        export_model(model, tmp_path / "m.onnx", format="onnx", keep_float=("head",), **common)
    with pytest.raises(MobileNetsError, match="applies to the onnx format only"):
        export_model(model, tmp_path / "m.tflite", format="tflite", reduce_range=True, **common)
    with pytest.raises(MobileNetsError, match="calib_select"):
        export_model(model, tmp_path / "m.onnx", format="onnx", calib_select="best", **common)
    with pytest.raises(MobileNetsError, match="int8 exports only"):
        export_model(model, tmp_path / "m.onnx", format="onnx", calib_method="minmax", input_size=SIZE)
    assert list(tmp_path.iterdir()) == []


def test_calibration_selection():
    from mobilenets.export.data import _pick

    assert _pick(10, None, "spread").tolist() == list(range(10))
    assert _pick(10, 4, "spread").tolist() == [0, 3, 6, 9]
    random = _pick(100, 5, "random")
    assert len(set(random.tolist())) == 5 and random.tolist() == sorted(random.tolist())
    assert random.tolist() == _pick(100, 5, "random").tolist()  # seeded: the same on every run


@pytest.mark.slow
def test_int8_onnx_holds_without_vnni(tmp_path):
    """The default ONNX int8 file has 7-bit weights in every integer conv / GEMM but the depthwise ones, so
    onnxruntime's AVX2 kernels (no VNNI), which add adjacent uint8 x int8 products in a saturating int16,
    compute exactly what a VNNI / ARM CPU computes: the emulation of those kernels equals the exact integer
    result bit for bit, and the file's onnxruntime logits on this CPU."""
    pytest.importorskip("onnxruntime.quantization")
    from mobilenets.export.quantize import emulate_u8s8_avx2, onnx_weights_fit_int16_pairs

    model = _digits_model()
    report = export_model(model, tmp_path / "m.onnx", format="onnx", int8=True, calib="digits", input_size=SIZE,
                          calib_size=16, eval_size=16, min_int8_agreement=0.0)
    largest, count = onnx_weights_fit_int16_pairs(report.path)
    assert count > 20 and largest <= 64  # every pointwise conv, the stem and the classifier
    digits = DigitsDataset("val", image_size=SIZE, transform=IMAGENET.with_size(SIZE).transform())
    x = torch.stack([digits[i][0] for i in range(6)]).numpy()
    exact = emulate_u8s8_avx2(report.path, x, saturate=False)
    np.testing.assert_array_equal(emulate_u8s8_avx2(report.path, x, saturate=True), exact)
    out = load_artifact(report.path, "onnx")(x)
    # onnxruntime requantizes with its own rounding between layers: close, not equal
    assert np.abs(out - exact).max() <= 0.05 * np.abs(exact).max()

    full = export_model(model, tmp_path / "full.onnx", format="onnx", int8=True, calib="digits", input_size=SIZE,
                        calib_size=16, eval_size=16, min_int8_agreement=0.0, reduce_range=False)
    assert onnx_weights_fit_int16_pairs(full.path)[0] == 127  # per-channel symmetric: each channel's max is 127


@pytest.mark.slow
def test_int8_onnx_keeps_parts_in_float(tmp_path):
    """keep_float leaves the named parts' convs / GEMMs without integer weights; the others stay int8."""
    pytest.importorskip("onnxruntime.quantization")
    from mobilenets.export.quantize import _quantized_weights

    model = _digits_model()

    def integer_ops(**kw) -> list[str]:
        r = export_model(model, tmp_path / "m.onnx", format="onnx", int8=True, calib="digits", input_size=SIZE,
                         calib_size=8, eval_size=8, min_int8_agreement=0.0, **kw)
        return [node.name for node, *_ in _quantized_weights(r.path)[2]]

    every = integer_ops()
    n_se = sum(isinstance(m, nn.Conv2d) for n, m in model.named_modules() if n.endswith(".se") or ".se." in n)
    assert any(name.startswith("stem") for name in every) and any(name.startswith("classifier") for name in every)
    some = integer_ops(keep_float=("stem", "classifier", "se"))
    assert not any(name.startswith(("stem", "classifier", "head_conv")) or "SqueezeExcite" in name for name in some)
    assert len(every) - len(some) == 1 + 2 + n_se  # the stem, head conv + classifier, every SE conv


@pytest.mark.parametrize("parts", [("stem", "classifier"), ("se", "hswish")])
def test_pt2e_keeps_parts_in_float(parts):
    """With keep_float, the PT2E quantizers (ExecuTorch's and litert-torch's) put no observer on the parts'
    convs / linears (their weights and outputs stay float) and still observe every other conv."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from mobilenets.export.quantize import annotate_float_parts, pt2e_config, pt2e_float_filter

    model = fold_batchnorm(small("mobilenet_v3_small"))
    x = torch.randn(1, 3, SIZE, SIZE)
    config = pt2e_config(get_symmetric_quantization_config, method="minmax")
    quantizer = annotate_float_parts(XNNPACKQuantizer().set_global(config), parts)
    exported = torch.export.export(model, (x,)).module()
    inside = pt2e_float_filter(parts)
    layers = [n for n in exported.graph.nodes if n.op == "call_function"
              and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)]
    n_inside = sum(inside(n) for n in layers)
    assert 0 < n_inside < len(layers)
    gm = prepare_pt2e(exported, quantizer)

    def observed(node) -> bool:
        return any(u.op == "call_module" and "activation_post_process" in str(u.target) for u in node.users)

    layers = [n for n in gm.graph.nodes if n.op == "call_function"
              and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)]
    weight_observed = [observed(n.args[1]) or (n.args[1].op == "call_module") for n in layers]
    assert [w for n, w in zip(layers, weight_observed) if inside(n)] == [False] * n_inside
    assert all(w for n, w in zip(layers, weight_observed) if not inside(n))
    with torch.no_grad():
        gm(x)  # calibrates


# ------------------------------------------------------------------------------------- int8 on digits


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    """The checkpoint the main job writes: ``mobilenets train`` with no arguments (V3-Small on the built-in
    digits at 64x64, 10 epochs, ~45 s; best val top-1 98.6% on the development machine)."""
    from mobilenets.training import TrainConfig, train

    out = tmp_path_factory.mktemp("digits_run")
    return train(TrainConfig(output=str(out / "run"), progress=False)).best_checkpoint


# Lower bounds on the digits val top-1 agreement of int8 with fp32, and upper bounds on the accuracy lost, for
# the default job's checkpoint (digits_ckpt). The checkpoint is trained where the test runs and differs from
# machine to machine (the CPU's kernels change the training numerics), so the bounds hold over independently
# trained default-job checkpoints with a margin. benchmarks/int8_robustness.py over seeds 1-5 (AVX-512 VNNI CPU,
# benchmarks/results/int8_robustness.json), minimum agreement / maximum drop: onnxruntime 99.72% / 0.28 points
# (min/max, percentile and entropy alike), LiteRT 99.44% / 0.28, ExecuTorch 100% / 0 with min/max (4
# checkpoints; the quantizer's histogram default: 98.61% / 0.84 over 5). onnxruntime's file computes the same
# on CPUs without VNNI (7-bit weights: test_int8_onnx_holds_without_vnni); with 8-bit weights the emulated
# no-VNNI agreement fell to 89.97-99.44% over the same checkpoints, the failure the issue reported.
INT8_MIN_AGREEMENT = {"onnx": 0.98, "tflite": 0.97, "executorch": 0.96}
INT8_MAX_DROP = {"onnx": 0.025, "tflite": 0.03, "executorch": 0.035}


@pytest.mark.slow
@pytest.mark.parametrize("fmt,module", [("onnx", "onnxruntime.quantization"), ("tflite", "litert_torch"),
                                        ("executorch", "executorch.runtime")])
def test_int8_on_digits(digits_ckpt, fmt, module, tmp_path):
    """int8 keeps fp32's top-1 on the digits val set within the bounds above, on every int8 runtime, and stores
    int8 weights."""
    pytest.importorskip(module)
    report = export_model(digits_ckpt, tmp_path / f"m_int8.{fmt}", format=fmt, int8=True, calib="digits",
                          eval_size=None)
    assert report.int8 and report.eval_source.startswith("digits:val (359 images)")
    assert report.accuracy_fp32 > 0.95, "the main job's checkpoint should have learnt the digits"
    assert report.top1_agreement >= INT8_MIN_AGREEMENT[fmt]
    assert report.accuracy_fp32 - report.accuracy <= INT8_MAX_DROP[fmt]
    fp32_bytes = 4 * sum(t.numel() for t in mobilenets.load_checkpoint(digits_ckpt)[0].state_dict().values())
    assert report.size_bytes < 0.5 * fp32_bytes  # the weights are stored as int8
    if fmt == "tflite":  # V3-Small's file is int8 end to end (SE pools and residual adds once ran in float32)
        assert _float_ops(report.path) == []


def test_calibration_feeds_every_image():
    """Every calibration image reaches the observers, in batches with a smaller last one (a remainder was
    once skipped: 3 photos in batches of 8 calibrated nothing, and ExecuTorch's lowering failed)."""
    from mobilenets.export.core import calibrate

    seen = []
    images = np.arange(19 * 3, dtype=np.float32).reshape(19, 3, 1, 1)
    calibrate(lambda x: seen.append(x[:, 0, 0, 0].tolist()), images, batch=8)
    assert [len(b) for b in seen] == [8, 8, 3] and sum(seen, []) == list(images[:, 0, 0, 0])
    seen.clear()
    calibrate(lambda x: seen.append(len(x)), images[:3], batch=8)
    assert seen == [3]
    with pytest.raises(MobileNetsError, match="no calibration images"):
        calibrate(lambda x: None, images[:0], batch=1)


@pytest.mark.slow
def test_qat_checkpoint_exports_to_int8(digits_ckpt, tmp_path):
    """train --qat: one epoch of PT2E fake-quant fine-tuning from the float checkpoint writes an ordinary
    checkpoint of the same model (every tensor, the classes and preprocessing), whose int8 ONNX file keeps
    fp32's top-1 like the float checkpoint's does."""
    pytest.importorskip("executorch")
    pytest.importorskip("onnxruntime.quantization")
    from mobilenets.training.qat import QATConfig, train_qat

    result = train_qat(QATConfig(weights=str(digits_ckpt), output=str(tmp_path / "qat"), epochs=1, progress=False))
    model, meta = mobilenets.load_checkpoint(result.checkpoint)
    start, start_meta = mobilenets.load_checkpoint(digits_ckpt)
    assert model.state_dict().keys() == start.state_dict().keys()
    assert meta.class_names == start_meta.class_names and meta.preprocessing == start_meta.preprocessing
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), start.state_dict().values()))
    # batch norm frozen (the default): the statistics are the start's, bit for bit; the weights moved
    stats = [k for k in start.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(model.state_dict()[k], start.state_dict()[k]) for k in stats)
    qat = meta.extra["qat"]
    assert qat["config"]["epochs"] == 1 and len(qat["ranges"]) > 20
    assert result.val_top1_qat > 90.0  # fake-quantized; the float start is > 95% (digits_ckpt's test)
    report = export_model(result.checkpoint, tmp_path / "q.onnx", format="onnx", int8=True, calib="digits",
                          eval_size=None)
    # measured over 5 default-job checkpoints (2 QAT epochs, benchmarks/int8_robustness.py): agreement with
    # the QAT model's float >= 99.44%, int8 accuracy at most 0.56 points below the float start
    assert report.top1_agreement >= 0.97
    assert report.accuracy >= result.val_top1_float / 100 - INT8_MAX_DROP["onnx"]


def test_cli_int8_options_errors(tmp_path):
    model = small("mobilenet_v2")
    ckpt = save_checkpoint(model, tmp_path / "v2.safetensors",
                           CheckpointMeta(model.config, preprocessing=IMAGENET.with_size(SIZE)))
    r = run("export", "--weights", str(ckpt), "--format", "executorch", "--int8", "--calib", "digits",
            "--calib-method", "entropy")
    assert r.returncode == 2 and "not offered for executorch" in r.stderr and "Traceback" not in r.stderr
    r = run("export", "--weights", str(ckpt), "--format", "onnx", "--int8", "--calib", "digits", "--keep-float", "x")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("train", "--qat")
    assert r.returncode == 2 and "pass --weights" in r.stderr and r.stderr.count("\n") == 1


def _float_ops(path) -> list[str]:
    """The operators of a TFLite file that compute in float32 (any float32 input or output tensor)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    return [op["op_name"] for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"
            and any(dtypes[i] == np.float32 for i in [*op["inputs"], *op["outputs"]] if i >= 0)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2"])
def test_int8_tflite_is_fully_int8(name, tmp_path):
    """Residual adds that feed residual adds (V2's 3- and 4-block stages) and the squeeze-excite pools used
    to run in float32 between DEQUANTIZE / QUANTIZE pairs (V2: 9 of 10 adds; V3: every SE, checked on the
    default job's file in test_int8_on_digits)."""
    pytest.importorskip("litert_torch")
    model = mobilenets.create_model(name, width=0.5, num_classes=10)
    digits = DigitsDataset("train", image_size=SIZE, transform=IMAGENET.with_size(SIZE).transform())
    from mobilenets.export.bench import calibrate_batchnorm

    calibrate_batchnorm(model, torch.stack([digits[i][0] for i in range(64)]).numpy())
    report = export_model(model, tmp_path / "m.tflite", format="tflite", int8=True, calib="digits",
                          input_size=SIZE, calib_size=32, eval_size=32, min_int8_agreement=0.0)
    float_ops = _float_ops(report.path)
    if name == "mobilenet_v2":  # its last ReLU6 and the global pool stay float (litert-torch leaves that
        # pool unquantized when its input is a clamp): 7x7 ops, next to nothing
        assert sorted(float_ops) == ["DEQUANTIZE", "MEAN", "QUANTIZE", "RELU6"]
    else:
        assert float_ops == []


# ------------------------------------------------------------------------------------------------- CLI


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_cli_export_checkpoint(tmp_path):
    model = small("mobilenet_v2")
    ckpt = save_checkpoint(model, tmp_path / "v2.safetensors",
                           CheckpointMeta(model.config, preprocessing=IMAGENET.with_size(SIZE)))
    out = tmp_path / "cwd"
    out.mkdir()
    r = run("export", "--weights", str(ckpt), "--format", "torchscript", cwd=out)
    assert r.returncode == 0, r.stderr
    assert (out / "v2.pt").is_file()  # the source's base name in the current folder
    assert "verified in its runtime" in r.stdout and "input 3x64x64, batch dynamic" in r.stdout


def test_cli_export_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a checkpoint")
    r = run("export", "--weights", str(bad), "--format", "onnx")
    assert r.returncode == 2 and "not a weights file" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("export", "--weights", str(tmp_path / "missing.safetensors"), "--format", "onnx")
    assert r.returncode == 2 and "no such file" in r.stderr
    r = run("export", "--weights", str(bad), "--format", "coreml")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------- real published weights (../shared)

PRETRAINED_FILES = ["mobilenet_v1_0.25_224.h5", "mobilenet_v2_1.0_224_quant.tflite",
                    "mobilenet_v3_small_1.0_224.uint8.tflite"]


@pytest.mark.slow
@pytest.mark.parametrize("fname", PRETRAINED_FILES)
def test_int8_onnx_agrees_on_the_photos(pretrained_dir, fname, tmp_path):
    """Real ImageNet weights, calibrated and checked on the three photos: int8 keeps every top-1, in
    onnxruntime on this CPU and in the emulation of its kernels on x86 CPUs without VNNI (with 8-bit weights
    the V3-Small file kept 2 of 3 there: the saturated int16 pair sums flipped the second photo)."""
    pytest.importorskip("onnxruntime.quantization")
    import warnings

    from mobilenets.export.quantize import emulate_u8s8_avx2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader's notes about TF-trained files
        report = export_model(pretrained_dir / fname, tmp_path / "m.onnx", format="onnx", int8=True,
                              calib=pretrained_dir / "photos")
        model, weights = mobilenets.model_from_weights(pretrained_dir / fname)
    assert report.eval_source.endswith("(3 images)")
    assert report.top1_agreement == 1.0
    photos = load_images(pretrained_dir / "photos", preprocessing=weights.info.preprocessing, role="eval")
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(photos.images)).numpy()
    no_vnni = emulate_u8s8_avx2(report.path, photos.images)
    assert (no_vnni.argmax(1) == ref.argmax(1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("fmt,module", [("tflite", "litert_torch"), ("executorch", "executorch.runtime")])
@pytest.mark.parametrize("fname", PRETRAINED_FILES)
def test_int8_mobile_formats_agree_on_the_photos(pretrained_dir, fname, fmt, module, tmp_path):
    """The same for litert-torch's int8 TFLite file (V2 failed this with nn.ReLU6 left as hardtanh) and
    ExecuTorch's (three photos, fewer than one calibration batch, once calibrated nothing and failed to lower;
    then V1 0.25 kept 1 of 3 with ReLU6 left as hardtanh)."""
    pytest.importorskip(module)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_model(pretrained_dir / fname, tmp_path / f"m.{fmt}", format=fmt, int8=True,
                              calib=pretrained_dir / "photos")
    assert report.top1_agreement == 1.0


def test_executorch_thread_pool_is_sized_before_a_program_loads(monkeypatch):
    """XNNPACK delegates keep the thread pool they were initialised with: resizing the pool after a program
    loaded left that program on a freed pool (its first call hung, or the heap was corrupted). The loader sizes
    the pool first."""
    pytest.importorskip("executorch.runtime")
    from executorch import runtime as rt

    from mobilenets.export import runtimes

    calls = []

    class Method:
        metadata = type("Meta", (), {"input_tensor_meta": lambda self, i: type("T", (), {"sizes": lambda s: [4]})(),
                                     "num_outputs": lambda self: 1})()

    class Program:
        method_names = ["forward"]

        def load_method(self, name):
            calls.append(f"load_method {name}")
            return Method()

    class Runtime:
        def load_program(self, path):
            calls.append("load_program")
            return Program()

    monkeypatch.setattr(rt.Runtime, "get", staticmethod(lambda: Runtime()))
    monkeypatch.setattr(runtimes, "_set_executorch_threads", lambda n: calls.append(f"threads {n}"))
    monkeypatch.setattr(runtimes, "_executorch_metadata", lambda program, path: None)
    runtimes._executorch(Path("m.pte"), 1)
    assert calls[0] == "threads 1" and calls[1] == "load_program"


# ------------------------------------------------------------------------------- damaged or foreign exported files


@pytest.mark.parametrize("fmt, content, phrase", [
    ("onnx", b"", "empty file, not a onnx model"),
    ("onnx", b"\x08\x99 not a protobuf" * 8, "not a readable onnx file"),
    ("torchscript", b"PK\x03\x04 not a zip" * 8, "not a readable torchscript file"),
    ("torchscript", b"\x08\x99 an onnx file, say" * 8, "not a readable torchscript file"),
])
def test_damaged_exported_files_are_one_line(tmp_path, fmt, content, phrase):
    """Whatever the runtime's own reader raises (protobuf, zip, miniz errors) comes back as one line naming the
    file, from read_metadata and load_artifact alike."""
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "torch")
    from mobilenets.export import read_metadata

    path = tmp_path / f"bad.{'onnx' if fmt == 'onnx' else 'pt'}"
    path.write_bytes(content)
    for call in (read_metadata, load_artifact):
        with pytest.raises(MobileNetsError) as e:
            call(path, fmt)
        assert str(e.value).startswith(str(path)) and phrase in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(MobileNetsError, match="num_threads must be an integer in"):
        load_artifact(path, fmt, num_threads=100_000)


def test_torchscript_metadata_is_read_without_loading_the_archive(tmp_path, monkeypatch):
    """Loading a TorchScript archive runs its code (__setstate__ and friends): read_metadata reads the document
    as a zip member instead, and gives what the loaded file's metadata is."""
    report = export_model(small("mobilenet_v3_small"), tmp_path / "m.pt", format="torchscript", input_size=SIZE)
    loaded = load_artifact(report.path, "torchscript").metadata
    from mobilenets.export import read_metadata

    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("read_metadata loaded the archive"))
    assert read_metadata(report.path, "torchscript") == loaded and loaded["task"] == "classification"


def test_export_never_writes_over_the_weights_it_exports(tmp_path, monkeypatch):
    """A PyTorch state dict named m.pt exported to TorchScript: the default output is m.pt too. Refused, the
    weights file untouched (it was replaced by the export)."""
    monkeypatch.chdir(tmp_path)
    torch.save(small("mobilenet_v3_small").state_dict(), tmp_path / "m.pt")
    before = (tmp_path / "m.pt").read_bytes()
    for output in (None, tmp_path / "m.pt", "./m.pt"):
        with pytest.raises(MobileNetsError, match="m.pt: is the weights file being exported; give another output"):
            export_model("m.pt", output, format="torchscript", input_size=SIZE)
    assert (tmp_path / "m.pt").read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_model_object_comes_back_in_its_mode_and_odd_models_are_one_line(tmp_path):
    """export_model(model) runs the model in eval mode for the export and its checks, and gives it back in the
    mode it came in; a batch norm no convolution feeds (nothing to fold it into) is one line."""
    pytest.importorskip("onnxruntime")
    model = small("mobilenet_v3_small").train()
    export_model(model, tmp_path / "m.onnx", format="onnx", input_size=SIZE)
    assert model.training and all(m.training for m in model.modules())
    odd = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3))
    with pytest.raises(MobileNetsError, match="Sequential: cannot fold its batch norms"):
        export_model(odd, tmp_path / "odd.onnx", format="onnx", input_size=SIZE)
    assert odd.training and not (tmp_path / "odd.onnx").exists()
