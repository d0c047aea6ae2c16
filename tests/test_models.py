"""Behaviour of every registered model: shapes, feature maps, gradients, determinism, options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mobilenets
from mobilenets.layers import Conv2dSame, make_divisible

from .conftest import ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("width", [0.35, 1.0, 1.25])
@pytest.mark.parametrize("size", [32, 97, 224])
def test_output_shape(name, width, size):
    model = mobilenets.create_model(name, width=width, num_classes=11).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 11)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("size", [64, 97, 160])
def test_feature_maps_match_feature_info(name, size):
    model = mobilenets.create_model(name, width=0.5).eval()
    strides = [f.stride for f in model.feature_info]
    assert strides == [2, 4, 8, 16, 32]
    backbone = mobilenets.create_model(name, width=0.5, features_only=True, out_strides=(2, 4, 8, 16, 32)).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, size, size))
    assert len(feats) == 5
    for f, info in zip(feats, backbone.feature_info):
        assert f.shape[1] == info.channels
        assert f.shape[-2:] == (math.ceil(size / info.stride),) * 2


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only_shares_weights_and_keys(name):
    model = mobilenets.create_model(name).eval()
    backbone = mobilenets.create_model(name, features_only=True).eval()
    missing, unexpected = backbone.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    assert all(k.startswith(("head_", "classifier")) for k in unexpected)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(backbone(x)[-1], model.forward_features(x))
    assert [f.stride for f in backbone.feature_info] == [4, 8, 16, 32]


def test_features_only_rejects_unknown_stride():
    with pytest.raises(mobilenets.MobileNetsError, match="stride"):
        mobilenets.create_model("mobilenet_v2", features_only=True, out_strides=(64,))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = mobilenets.create_model(name, width=0.5, num_classes=5).train()
    loss = F.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([1, 3]))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backbone_every_parameter_gets_a_gradient(name):
    model = mobilenets.create_model(name, width=0.5, features_only=True).train()
    sum(f.mean() for f in model(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_is_deterministic(name):
    model = mobilenets.create_model(name).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert torch.allclose(model(x[:1]), model(x)[:1], atol=1e-5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_is_features_then_head(name):
    model = mobilenets.create_model(name).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        assert torch.equal(model(x), model.forward_head(feats))
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier_and_headless(name):
    # batch 2: in training mode V4's head batch norm (on pooled 1x1 maps) needs more than one sample
    model = mobilenets.create_model(name)
    model.reset_classifier(7)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert model.config.num_classes == 7
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, model.head_hidden_size)
    assert mobilenets.create_model(name, num_classes=0)(torch.randn(2, 3, 64, 64)).shape[1] == model.head_hidden_size


@pytest.mark.parametrize("name", ALL_MODELS)
def test_in_chans(name):
    model = mobilenets.create_model(name, in_chans=1, num_classes=3)
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 3)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_tf_options(name):
    model = mobilenets.create_model(name, tf_padding=True, bn_eps=1e-3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    strided = [m for m in convs if m.stride != (1, 1)]
    assert strided and all(isinstance(m, Conv2dSame) for m in strided)
    assert not any(isinstance(m, Conv2dSame) for m in convs if m.stride == (1, 1))
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # same parameters, same keys as the PyTorch-convention model
    ref = mobilenets.create_model(name)
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict())
    model.eval(), ref.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model.forward_features(x), ref.forward_features(x)
        assert a.shape == b.shape
        assert (a - b).abs().max() > 1e-3 * b.abs().max()  # asymmetric padding changes the numbers


@pytest.mark.parametrize("size,kernel", [(8, 3), (9, 3), (28, 5), (7, 5)])
def test_conv2d_same_pads_like_tensorflow(size, kernel):
    conv = Conv2dSame(2, 2, kernel, stride=2, bias=False)
    x = torch.randn(1, 2, size, size)
    out_size = math.ceil(size / 2)
    total = max((out_size - 1) * 2 + kernel - size, 0)
    before, after = total // 2, total - total // 2  # TF puts the extra pixel at the bottom/right
    ref = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, stride=2)
    assert torch.allclose(conv(x), ref, atol=1e-6)
    assert conv(x).shape[-1] == out_size


def test_make_divisible():
    assert make_divisible(32 * 0.35) == 16  # 11.2 rounds to 8, which is > 10% down: 16
    assert make_divisible(16 * 0.35) == 8
    assert make_divisible(1280) == 1280
    assert make_divisible(100) == 104
    assert make_divisible(3, 8) == 8
    for v in range(1, 2000):
        r = make_divisible(v)
        assert r % 8 == 0 and r >= 8 and r >= 0.9 * v


def test_v2_structure_follows_table_2():
    model = mobilenets.create_model("mobilenet_v2")
    blocks = [b for stage in model.stages for b in stage]
    irs = [b for b in blocks if isinstance(b, mobilenets.blocks.InvertedResidual)]
    assert len(irs) == 17  # 1 + 2 + 3 + 4 + 3 + 3 + 1
    assert irs[0].conv_pw is None  # t = 1: no expansion conv
    assert sum(b.has_skip for b in irs) == 10  # the 10 residual ADDs of the TFLite graph
    assert all(b.se is None for b in irs)
    assert isinstance(blocks[-1], mobilenets.layers.ConvNormAct) and blocks[-1].conv.out_channels == 1280
    assert mobilenets.create_model("mobilenet_v2", width=0.5).num_features == 1280
    assert mobilenets.create_model("mobilenet_v2", width=1.4).num_features == 1792


def test_v3_small_se_squeeze_widths():
    # PROVENANCE.md: the released V3-Small's 9 SE blocks squeeze to 8, 24, 64, 64, 32, 40, 72, 144, 144
    model = mobilenets.create_model("mobilenet_v3_small")
    squeeze = [m.conv_reduce.out_channels for m in model.modules() if isinstance(m, mobilenets.blocks.SqueezeExcite)]
    assert squeeze == [8, 24, 64, 64, 32, 40, 72, 144, 144]
    assert model.head_hidden_size == 1024


def test_minimal_variants_have_no_se_hswish_or_5x5():
    for name in ("mobilenet_v3_large_minimal", "mobilenet_v3_small_minimal"):
        model = mobilenets.create_model(name)
        assert not any(isinstance(m, (mobilenets.blocks.SqueezeExcite, nn.Hardswish)) for m in model.modules())
        assert all(m.kernel_size in ((1, 1), (3, 3)) for m in model.modules() if isinstance(m, nn.Conv2d))


def test_bad_arguments():
    with pytest.raises(mobilenets.MobileNetsError, match="unknown model 'mobilenet_v4'"):
        mobilenets.create_model("mobilenet_v4")
    with pytest.raises(mobilenets.MobileNetsError, match="width"):
        mobilenets.create_model("mobilenet_v1", width=0)
    with pytest.raises(TypeError):
        mobilenets.create_model("mobilenet_v1", 0.5)  # options are keyword-only
