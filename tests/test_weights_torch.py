"""torchvision and timm weights load into our models as the same network: random weights *and* random batch-norm
statistics, saved as .pth and .safetensors, give the same logits (1e-4 of the logit scale)."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import mobilenets
from mobilenets import MobileNetsError, create_model, load_weights, model_from_weights

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TOL = 1e-4  # relative to the largest |logit|


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random conv/linear weights (as built) and random BN affine parameters and running statistics, so a
    mapping that swaps, drops or mis-epsilons any BN tensor shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.1 + 0.01)  # small var: eps matters
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def save(state: dict[str, torch.Tensor], path, fmt: str) -> None:
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def assert_same_logits(theirs: nn.Module, ours: nn.Module, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = theirs.eval()(x), ours.eval()(x)
    assert a.shape == b.shape
    err = (a - b).abs().max() / a.abs().max()
    assert err < TOL, f"relative logit error {err:.2e}"


# (their constructor, our model, width, tf-ported)
TORCHVISION = [
    ("mobilenet_v2", "mobilenet_v2", 1.0),
    ("mobilenet_v3_large", "mobilenet_v3_large", 1.0),
    ("mobilenet_v3_small", "mobilenet_v3_small", 1.0),
]
TIMM = [
    ("mobilenetv1_100", "mobilenet_v1", 1.0, False),
    ("mobilenetv1_125", "mobilenet_v1", 1.25, False),
    ("mobilenetv2_035", "mobilenet_v2", 0.35, False),
    ("mobilenetv2_050", "mobilenet_v2", 0.5, False),
    ("mobilenetv2_100", "mobilenet_v2", 1.0, False),
    ("mobilenetv2_140", "mobilenet_v2", 1.4, False),
    ("mobilenetv3_large_100", "mobilenet_v3_large", 1.0, False),
    ("mobilenetv3_small_100", "mobilenet_v3_small", 1.0, False),
    ("tf_mobilenetv3_large_075", "mobilenet_v3_large", 0.75, True),  # TF "SAME" padding, BN eps 1e-3
    ("tf_mobilenetv3_large_minimal_100", "mobilenet_v3_large_minimal", 1.0, True),
    ("tf_mobilenetv3_small_minimal_100", "mobilenet_v3_small_minimal", 1.0, True),
]


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("tv_name, ours, width", TORCHVISION)
def test_torchvision_equivalence(tmp_path, fmt, tv_name, ours, width):
    theirs = randomise(getattr(torchvision.models, tv_name)())
    path = tmp_path / f"w.{fmt}"
    save(theirs.state_dict(), path, fmt)
    info = mobilenets.inspect_weights(path)
    assert (info.format, info.model, info.width, info.num_classes) == ("torchvision", ours, width, 1000)
    model, report = model_from_weights(path)
    assert not report.reinitialized and not report.messages
    assert_same_logits(theirs, model)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("timm_name, ours, width, tf", TIMM)
def test_timm_equivalence(tmp_path, fmt, timm_name, ours, width, tf):
    theirs = randomise(timm.create_model(timm_name))
    path = tmp_path / f"w.{fmt}"
    save(theirs.state_dict(), path, fmt)
    # timm tf_* state dicts do not record that they need TF padding: the caller says so (tf=True).
    model, report = model_from_weights(path, tf=tf or None)
    assert (report.info.format, report.info.model, report.info.width) == ("timm", ours, width)
    assert (model.config.tf_padding, model.config.bn_eps) == ((True, 1e-3) if tf else (False, 1e-5))
    assert_same_logits(theirs, model, size=65 if tf else 64)  # odd size: TF padding differs from symmetric


def _timm_v3_050(variant: str) -> nn.Module:
    """timm's V3 at width 0.5, whose stem stays at 16 channels (timm: fix_stem below 0.75). timm registers
    ``mobilenetv3_small_050`` only; the Large one is built by the same generator."""
    if variant == "small":
        return timm.create_model("mobilenetv3_small_050", pretrained=False)
    from timm.models.mobilenetv3 import _gen_mobilenet_v3

    return _gen_mobilenet_v3("mobilenetv3_large_100", 0.5, pretrained=False)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("variant", ["small", "large"])
def test_timm_fixed_stem_equivalence(tmp_path, fmt, variant):
    theirs = randomise(_timm_v3_050(variant))
    assert theirs.conv_stem.out_channels == 16  # the paper's scaling would give 8
    path = tmp_path / f"w.{fmt}"
    save(theirs.state_dict(), path, fmt)
    model, report = model_from_weights(path)
    ours = f"mobilenet_v3_{variant}"
    assert (report.info.format, report.info.model, report.info.width, report.info.fixed_stem) == \
        ("timm", ours, 0.5, True)
    assert model.config.fixed_stem and model.stem.conv.out_channels == 16
    assert_same_logits(theirs, model)
    # our checkpoint records it: converted, the file rebuilds the same model
    mobilenets.weights.convert_weights(path, tmp_path / "ours.safetensors")
    info = mobilenets.inspect_weights(tmp_path / "ours.safetensors")
    assert (info.format, info.model, info.width, info.fixed_stem) == ("mobilenets", ours, 0.5, True)
    assert_same_logits(theirs, model_from_weights(tmp_path / "ours.safetensors")[0])
    # a scaled-stem model of the same width is another architecture: all or nothing, model untouched
    scaled = create_model(ours, width=0.5)
    before = {k: v.clone() for k, v in scaled.state_dict().items()}
    with pytest.raises(MobileNetsError, match=r"width 0.5 \(fixed stem\) do not fit mobilenet_v3_\w+ width 0.5: "
                                              r"\d+ mismatched"):
        load_weights(scaled, path)
    assert all(torch.equal(before[k], v) for k, v in scaled.state_dict().items())


def test_create_model_weights_and_load_weights_agree(tmp_path):
    theirs = randomise(timm.create_model("mobilenetv2_050"))
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    a = create_model("mobilenet_v2", weights=tmp_path / "w.pth")
    b = create_model("mobilenet_v2", width=0.5)
    report = load_weights(b, tmp_path / "w.pth")
    assert report.loaded and not report.reinitialized
    assert a.config == b.config
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_create_model_takes_the_input_channels_of_the_weights(tmp_path):
    """A file of a 1-channel model builds a 1-channel model, as model_from_weights does (create_model once
    asked for 3 channels and called the file 'width 1 ... do not fit width 1'); asking for another count
    names the stem's shapes."""
    gray = create_model("mobilenet_v3_small", width=0.5, num_classes=4, in_chans=1)
    mobilenets.save_checkpoint(gray, tmp_path / "gray.safetensors")
    model = create_model("mobilenet_v3_small", weights=tmp_path / "gray.safetensors")
    assert model.config.in_chans == 1 and model.config.width == 0.5
    assert torch.equal(model.state_dict()["stem.conv.weight"], gray.state_dict()["stem.conv.weight"])
    with pytest.raises(MobileNetsError, match=r"stem.conv.weight \(8, 1, 3, 3\) vs \(8, 3, 3, 3\)"):
        create_model("mobilenet_v3_small", weights=tmp_path / "gray.safetensors", in_chans=3)


def test_our_checkpoint_and_state_dict_round_trip(tmp_path):
    model = randomise(create_model("mobilenet_v3_small", width=0.75, num_classes=7, tf_padding=True, bn_eps=1e-3))
    mobilenets.save_checkpoint(model, tmp_path / "ck.safetensors", mobilenets.CheckpointMeta(
        model.config, class_names=[f"c{i}" for i in range(7)], preprocessing=mobilenets.TF_INCEPTION))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "sd.pth")
    loaded, report = model_from_weights(tmp_path / "ck.safetensors")
    assert loaded.config == model.config and report.info.format == "mobilenets"
    assert report.info.class_names == tuple(f"c{i}" for i in range(7))
    assert report.info.preprocessing == mobilenets.TF_INCEPTION
    assert_same_logits(model, loaded)
    info = mobilenets.inspect_weights(tmp_path / "sd.pth")  # DDP prefix and checkpoint nesting unwrapped
    assert (info.format, info.model, info.width, info.num_classes) == ("mobilenets-state-dict",
                                                                      "mobilenet_v3_small", 0.75, 7)


def test_other_class_count_loads_backbone_and_reinitialises_classifier(tmp_path):
    theirs = randomise(torchvision.models.mobilenet_v3_small())
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    with pytest.warns(UserWarning, match="classifier not loaded: the file has 1000 classes, the model 10"):
        model, report = model_from_weights(tmp_path / "w.pth", num_classes=10)
    assert report.reinitialized == ["classifier.weight", "classifier.bias"]
    assert model.classifier.out_features == 10 and torch.all(model.classifier.bias == 0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # everything up to the classifier is the file's
        assert torch.allclose(model.eval().forward_head(model.forward_features(x), pre_logits=True),
                              theirs.eval().classifier[:-1](theirs.avgpool(theirs.features(x)).flatten(1)),
                              atol=1e-5)
    # the same through load_weights into an existing 10-class model
    target = create_model("mobilenet_v3_small", num_classes=10, bn_eps=1e-3)
    with pytest.warns(UserWarning, match="re-initialised"):
        assert load_weights(target, tmp_path / "w.pth").reinitialized == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("target, match", [
    (("mobilenet_v3_small", 1.0), r"missing: .*unexpected: "),
    (("mobilenet_v2", 1.0), r"mismatched \(file vs model\): "),
])
def test_wrong_architecture_fails_and_leaves_model_unchanged(tmp_path, target, match):
    theirs = randomise(timm.create_model("mobilenetv2_050"))
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    model = create_model(target[0], width=target[1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MobileNetsError, match=match) as e:
        load_weights(model, tmp_path / "w.pth")
    assert "mobilenet_v2 width 0.5" in str(e.value) and "model left unchanged" in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(MobileNetsError, match="holds mobilenet_v2"):
        create_model("mobilenet_v1", weights=tmp_path / "w.pth")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "module.pth")  # a whole module: needs unpickling
    with pytest.raises(MobileNetsError, match=r"holds Python objects other than tensors "
                                              r"\(torch.nn.modules.linear.Linear\); refused, nothing was loaded$"):
        mobilenets.inspect_weights(tmp_path / "module.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(MobileNetsError, match="not a MobileNet from torchvision, timm or mobilenets"):
        mobilenets.inspect_weights(tmp_path / "other.pth")


def test_no_warning_when_everything_fits(tmp_path):
    torch.save(randomise(torchvision.models.mobilenet_v2()).state_dict(), tmp_path / "w.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("mobilenet_v2", weights=tmp_path / "w.pth")


def test_features_only_models_load_the_backbone(tmp_path):
    theirs = randomise(timm.create_model("mobilenetv3_large_100"))
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    full, _ = model_from_weights(tmp_path / "w.pth")
    backbone = create_model("mobilenet_v3_large", features_only=True, out_strides=(8, 16))
    report = load_weights(backbone, tmp_path / "w.pth")
    assert "classifier.weight" in report.unused and "head_conv.weight" in report.unused
    assert not report.reinitialized and not report.messages
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = backbone.eval()(x)
        assert torch.equal(feats[-1], full.eval().stages[:4](full.stem(x)))
    same = create_model("mobilenet_v3_large", features_only=True, out_strides=(8, 16), weights=tmp_path / "w.pth")
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), backbone.state_dict().values()))
