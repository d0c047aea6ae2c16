"""Dense-prediction backbone options: halved tails (detection / segmentation), dilation (output stride 16 / 8),
the fixed stem, and the taps inside blocks (expansion / depthwise outputs)."""

from __future__ import annotations

import math

import pytest
import torch

import mobilenets
from mobilenets import MobileNetsError
from mobilenets.features import FeatureExtractor, Tap, downsampling_expansion_tap, stage_end_taps

from .conftest import ALL_MODELS

# V2 / V3 inverted residuals (V4's UIBs have no SSDLite expansion tap: its paper pairs V4 with other heads)
INVERTED = [n for n in ALL_MODELS if n != "mobilenet_v1" and not n.startswith("mobilenet_v4")]


@pytest.mark.parametrize("name", INVERTED)
def test_expansion_tap_is_the_downsampling_blocks_expansion(name):
    """The SSDLite C4 tap: expansion output of the first stride-32 block, at stride 16 (V2 layer 15: 576 ch;
    V3-Large 13th bneck: 672; V3-Small 9th: 288)."""
    model = mobilenets.create_model(name).eval()
    tap = downsampling_expansion_tap(model, 32)
    b = model.block_info[tap.block]
    assert b.table_stride == 32 and model.block_info[tap.block - 1].table_stride == 16
    expected = {"mobilenet_v2": (13, 576), "mobilenet_v3_large": (12, 672), "mobilenet_v3_small": (8, 288)}
    if name in expected:
        assert (tap.block, b.exp_chs) == expected[name]
    fe = FeatureExtractor(model, taps=[tap, Tap(len(model.block_info) - 1)]).eval()
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        c4, c5 = fe(x)
        # the same tensor as running the block's own expansion sub-modules after the body before it
        h = model.stem(x)
        for info in model.block_info[:tap.block]:
            h = model.get_submodule(info.module)(h)
        block = model.get_submodule(b.module)
        ref = block.act1(block.bn1(block.conv_pw(h)))
    assert torch.equal(c4, ref)
    assert c4.shape[-2:] == (20, 20) and c5.shape[-2:] == (10, 10)
    assert [f.channels for f in fe.feature_info] == [c4.shape[1], c5.shape[1]]
    assert torch.allclose(c5, model.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("style", ["tf", "torchvision"])
def test_dilated_backbone_keeps_keys_and_resolution(name, output_stride, style):
    base = mobilenets.create_model(name)
    model = mobilenets.create_model(name, output_stride=output_stride, dilation_style=style).eval()
    assert list(base.state_dict()) == list(model.state_dict())  # the same weights load into a dilated backbone
    assert max(b.stride for b in model.block_info) == output_stride
    with torch.no_grad():
        y = model.forward_features(torch.randn(1, 3, 96, 96))
    assert y.shape[-1] == math.ceil(96 / output_stride)


def test_dilation_styles_differ_where_tf_and_torchvision_differ():
    """TF-slim gives the block that would have downsampled rate 1 and the rest rate 2; torchvision gives it 2."""
    tf = mobilenets.create_model("mobilenet_v3_large", output_stride=16, dilation_style="tf")
    tv = mobilenets.create_model("mobilenet_v3_large", output_stride=16, dilation_style="torchvision")
    first = tf.block_info[12].module
    assert tf.get_submodule(first).conv_dw.dilation == (1, 1)
    assert tv.get_submodule(first).conv_dw.dilation == (2, 2)
    assert tf.get_submodule(tf.block_info[13].module).conv_dw.dilation == (2, 2)


def test_torchvision_reduced_dilated_backbone_matches_torchvision():
    """tail="detection" + output stride 16 (torchvision style) is torchvision's reduced_tail=True,
    dilated=True backbone, layer for layer (same parameter shapes in the same order)."""
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.mobilenet_v3_large(reduced_tail=True, dilated=True).features
    ours = mobilenets.create_model("mobilenet_v3_large", tail="detection", output_stride=16,
                                   dilation_style="torchvision", features_only=True, out_strides=(16,))
    tv_shapes = [tuple(p.shape) for p in tv.parameters()]
    our_shapes = [tuple(p.shape) for p in ours.parameters()]
    assert our_shapes == tv_shapes[:len(our_shapes)]
    tv_convs = [(m.stride, m.dilation) for m in tv.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    our_convs = [(m.stride, m.dilation) for m in ours.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert our_convs == tv_convs


@pytest.mark.parametrize("name,c4_exp,tail_exp,c5", [("mobilenet_v3_large", (672, 336), 480, 480),
                                                     ("mobilenet_v3_small", (288, 144), 288, 288)])
def test_halved_tails(name, c4_exp, tail_exp, c5):
    """V3 section 6.3 / TF-slim V3_*_DETECTION (13th / 9th block keeps its expansion) and TF DeepLab's
    mobilenet_v3_*_seg (that expansion halved too: 336 / 144)."""
    for tail, exp in zip(("detection", "segmentation"), c4_exp):
        m = mobilenets.create_model(name, tail=tail)
        first = next(b for b in m.block_info if b.table_stride == 32)
        assert first.exp_chs == exp
        assert [b.exp_chs for b in m.block_info if b.table_stride == 32][1] == tail_exp
        assert m.num_features == c5


def test_fixed_stem():
    m = mobilenets.create_model("mobilenet_v3_small", width=0.5, fixed_stem=True)
    assert m.stem.conv.out_channels == 16 and m.config.fixed_stem
    assert mobilenets.create_model("mobilenet_v3_small", width=0.5).stem.conv.out_channels == 8


@pytest.mark.parametrize("bad", [dict(width=0), dict(width=-1.0), dict(num_classes=-3), dict(tail="half"),
                                 dict(output_stride=4), dict(dilation_style="keras"), dict(bn_eps=0),
                                 dict(dropout=1.5), dict(in_chans=0)])
def test_bad_options_are_mobilenets_errors(bad):
    with pytest.raises(MobileNetsError):
        mobilenets.create_model("mobilenet_v2", **bad)


def test_unknown_model_suggests():
    with pytest.raises(MobileNetsError, match="did you mean mobilenet_v3_small"):
        mobilenets.create_model("mobilenet_v3_smal")


def test_stage_end_taps_and_depthwise_point():
    model = mobilenets.create_model("mobilenet_v3_large").eval()
    assert [model.block_info[t.block].stride for t in stage_end_taps(model, (8, 16))] == [8, 16]
    fe = FeatureExtractor(model, taps=[Tap(5, "depthwise")]).eval()  # V3-Large layer 7 depthwise (120 ch)
    (d,) = fe(torch.randn(1, 3, 64, 64))
    assert d.shape[1] == 120 and fe.feature_info[0].stride == 8 and d.shape[-1] == 8
    with pytest.raises(MobileNetsError):
        FeatureExtractor(model, taps=[Tap(99)])
