"""MobileNetV4: the tables against TF Model Garden's block specs, the UIB / FusedIB / Mobile MQA blocks, shapes,
features and gradients of every V4 model, timm equivalence (attention included), cost accounting, stochastic
depth, export in every runtime, training end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import mobilenets
from mobilenets import MobileNetsError, create_model, model_from_weights, profile
from mobilenets.attention import MobileMQA
from mobilenets import mobilenet_v4
from mobilenets.spec import MQA, UIB, Conv, FusedIB
from mobilenets.uib import FusedInvertedBottleneck, UniversalInvertedBottleneck

V4 = [n for n in mobilenets.list_models() if n.startswith("mobilenet_v4")]
BIG = {"mobilenet_v4_conv_large", "mobilenet_v4_hybrid_large"}


def test_the_five_models_are_registered():
    assert V4 == ["mobilenet_v4_conv_small", "mobilenet_v4_conv_medium", "mobilenet_v4_conv_large",
                  "mobilenet_v4_hybrid_medium", "mobilenet_v4_hybrid_large"]


# TF Model Garden block specs, counted by kind (stem included): (convbn, fused_ib, uib, mhsa) and the
# stride-2 rows. A row dropped, duplicated or given the wrong kind shows here.
TF_COUNTS = {
    "mobilenet_v4_conv_small": ((6, 0, 12, 0), 5),
    "mobilenet_v4_conv_medium": ((2, 1, 21, 0), 5),
    "mobilenet_v4_conv_large": ((2, 1, 26, 0), 5),
    "mobilenet_v4_hybrid_medium": ((2, 1, 22, 8), 5),
    "mobilenet_v4_hybrid_large": ((2, 1, 27, 8), 5),
}


@pytest.mark.parametrize("name", V4)
def test_tables_follow_tf_block_specs(name):
    arch = getattr(mobilenet_v4, name.upper())
    rows = (arch.stem, *arch.body)
    kinds = tuple(sum(isinstance(r, t) for r in rows) for t in (Conv, FusedIB, UIB, MQA))
    strided = sum(getattr(r, "stride", 1) == 2 for r in rows)
    assert (kinds, strided) == TF_COUNTS[name]
    assert arch.head.hidden == 1280 and arch.head.norm and rows[-1] == Conv(1, 960, 1, rows[-1].act)
    hybrid = "hybrid" in name
    assert all(r.layer_scale == hybrid for r in rows if isinstance(r, (UIB, MQA)))
    # Hybrid-L: GELU everywhere except the attention blocks, which have no activation
    acts = {r.act for r in rows if hasattr(r, "act")} | {arch.head.act}
    assert acts == ({"gelu"} if name.endswith("hybrid_large") else {"relu"})


def test_uib_instances_and_stride_placement():
    """IB (0, k), ConvNext-like (k, 0), FFN (0, 0), ExtraDW (k, k'): which depthwise convs exist, and where the
    stride goes (the middle one when present, TF middle_dw_downsample=True)."""
    def uib(start, mid, stride):
        return UniversalInvertedBottleneck(16, 64, 24, start_kernel=start, mid_kernel=mid, stride=stride)

    ib, cn, ffn, extra = uib(0, 3, 2), uib(5, 0, 2), uib(0, 0, 1), uib(3, 5, 2)
    assert ib.conv_dw_start is None and ib.conv_dw.stride == (2, 2) and ib.conv_dw.kernel_size == (3, 3)
    assert cn.conv_dw is None and cn.conv_dw_start.stride == (2, 2) and cn.conv_dw_start.groups == 16
    assert ffn.conv_dw_start is None and ffn.conv_dw is None
    assert extra.conv_dw_start.stride == (1, 1) and extra.conv_dw.stride == (2, 2)
    assert extra.conv_dw.kernel_size == (5, 5) and extra.conv_dw.groups == 64
    x = torch.randn(2, 16, 16, 16)
    for block, size in ((ib, 8), (cn, 8), (ffn, 16), (extra, 8)):
        assert block(x).shape == (2, 24, size, size)
    with pytest.raises(ValueError, match="needs a depthwise conv"):
        uib(0, 0, 2)
    # the start depthwise conv is linear, the middle one has an activation: TF's UIB
    assert isinstance(extra.act2, nn.ReLU) and not hasattr(extra, "act_start")


def test_expansion_widths_follow_the_input():
    """TF: expand_filters = make_divisible(in_filters * expand_ratio, 8): Conv-M's FusedIB 32 -> 128, the
    first UIB 48 * 4 = 192, the first stride-16 UIB 80 * 6 = 480."""
    model = create_model("mobilenet_v4_conv_medium")
    info = model.block_info
    assert (info[0].in_chs, info[0].exp_chs, info[0].out_chs) == (32, 128, 48)
    assert (info[1].in_chs, info[1].exp_chs) == (48, 192)
    assert (info[3].in_chs, info[3].exp_chs, info[3].out_chs) == (80, 480, 160)
    assert isinstance(model.get_submodule(info[0].module), FusedInvertedBottleneck)


def _reference_mqa(block: MobileMQA, x: torch.Tensor) -> torch.Tensor:
    """Mobile MQA written head by head with torch's own attention (V4 Equation 2), for comparison."""
    x0, x = x, block.norm(x)
    b, _, h, w = x.shape
    kx = block.key_bn(block.key_down(x)) if block.key_down is not None else x
    vx = block.value_bn(block.value_down(x)) if block.value_down is not None else x
    k = block.key_proj(kx).flatten(2).transpose(1, 2)  # (B, M, key_dim): one head shared by all queries
    v = block.value_proj(vx).flatten(2).transpose(1, 2)
    q = block.query_proj(x)
    heads = []
    for i in range(block.heads):
        qi = q[:, i * block.key_dim:(i + 1) * block.key_dim].flatten(2).transpose(1, 2)
        oi = nn.functional.scaled_dot_product_attention(qi, k, v)  # (B, L, value_dim)
        heads.append(oi.transpose(1, 2).reshape(b, block.value_dim, h, w))
    out = block.out_proj(torch.cat(heads, 1))
    return x0 + block.layer_scale(out)


@pytest.mark.parametrize("kv_stride", [1, 2])
def test_mobile_mqa_equals_per_head_attention(kv_stride):
    torch.manual_seed(0)
    block = MobileMQA(32, 32, heads=4, key_dim=16, value_dim=8, kv_stride=kv_stride).eval()
    with torch.no_grad():
        block.layer_scale.gamma.fill_(1.0)  # 1e-5 at init would hide the attention
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 32, 6, 5)  # odd sizes: the key/value map is 3x3 at stride 2
        out, ref = block(x), _reference_mqa(block, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert (out - x).abs().max() > 0.1  # the attention branch really contributes


@pytest.mark.parametrize("block", [
    lambda: UniversalInvertedBottleneck(16, 64, 16, start_kernel=3, mid_kernel=5, layer_scale=True, drop_path_rate=0.1),
    lambda: UniversalInvertedBottleneck(16, 64, 24, start_kernel=0, mid_kernel=3, stride=2),
    lambda: UniversalInvertedBottleneck(16, 64, 16, start_kernel=0, mid_kernel=0),
    lambda: FusedInvertedBottleneck(16, 64, 16, drop_path_rate=0.1),
    lambda: MobileMQA(16, 16, heads=2, key_dim=8, value_dim=8, kv_stride=2, drop_path_rate=0.1),
    lambda: MobileMQA(16, 16, heads=2, key_dim=8, value_dim=8),
], ids=["extradw", "ib-s2", "ffn", "fusedib", "mqa-kv2", "mqa"])
def test_blocks_script_trace_and_export(block):
    """The V4 blocks are plain tensor code: torch.jit.script, torch.fx and torch.export give the same outputs
    (the model-level contract tests run over every registered model)."""
    import warnings

    b = block().eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        ref = b(x)
        for f in (torch.jit.script(b), torch.fx.symbolic_trace(b), torch.export.export(b, (x,)).module()):
            torch.testing.assert_close(f(x), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", V4)
def test_shapes_features_gradients(name):
    width = 0.5 if name in BIG else 1.0
    model = create_model(name, width=width, num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 5)
    assert [f.stride for f in model.feature_info] == [2, 4, 8, 16, 32]
    out.square().mean().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for k, p in model.named_parameters() if "gamma" in k)  # layer scale learns
    feats = create_model(name, width=width, features_only=True, out_strides=(4, 8, 16, 32))
    maps = feats(x)
    assert [m.shape[1] for m in maps] == [f.channels for f in feats.feature_info]
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2]
    model.eval()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert pooled.shape == (2, 1280) and torch.equal(model.classifier(pooled), model(x))
        model.reset_classifier(0)
        assert torch.equal(model(x), pooled)


def test_width_multiplier_and_head():
    """The 1280 head conv keeps its width below 1.0 and scales above it (TF finegrain_classification_mode);
    every other layer scales, rounded to 8."""
    half, wide = create_model("mobilenet_v4_conv_small", width=0.5), create_model("mobilenet_v4_conv_small", width=1.5)
    assert half.stem.conv.out_channels == 16 and wide.stem.conv.out_channels == 48
    assert half.num_features == 480 and wide.num_features == 1440
    assert half.head_hidden_size == 1280 and wide.head_hidden_size == 1920
    assert half.head_conv.bias is None and isinstance(half.head_bn, nn.BatchNorm2d)


def test_hybrid_attention_profile_rows():
    """Each MQA block gives one "attention" row with the two matmuls: Hybrid-M at 256, the stride-16 blocks
    (16x16 queries, 8x8 keys after the stride-2 downsampling, 4 heads of 64) and the stride-32 ones (8x8, 8x8)."""
    prof = profile(create_model("mobilenet_v4_hybrid_medium"), 256)
    rows = [r for r in prof.layers if r.op_type == "attention"]
    assert len(rows) == 8 and all(r.params == 0 for r in rows)
    assert rows[0].madds == 4 * 256 * 64 * (64 + 64)
    assert rows[-1].madds == 4 * 64 * 64 * (64 + 64)
    assert prof.by_type()["attention"][0] == 4 * rows[0].madds + 4 * rows[-1].madds
    with torch.device("meta"):  # `mobilenets profile` runs on the meta device
        assert profile(create_model("mobilenet_v4_hybrid_medium"), 256).madds == prof.madds


def test_published_conv_small_and_documented_gaps():
    """Conv-S reproduces the paper (3.8M, 0.2G at 224); the other four carry notes with our exact counts
    (checked number by number in test_profile.py) and are 4-8% above the paper."""
    from mobilenets.published import PUBLISHED

    rows = {p.model: p for p in PUBLISHED if p.model in V4}
    assert set(rows) == set(V4)
    s = profile(create_model("mobilenet_v4_conv_small"), 224)
    assert round(s.params / 1e6, 1) == 3.8 and round(s.madds / 1e9, 1) == 0.2
    for name, pub in rows.items():
        if name == "mobilenet_v4_conv_small":
            assert not pub.params_note and not pub.madds_note
        else:
            assert pub.params_note and pub.madds_note


# ------------------------------------------------------------------------------------------- stochastic depth

def test_drop_path_rate():
    model = create_model("mobilenet_v4_conv_small", drop_path_rate=0.2, num_classes=3)
    assert model.config.drop_path_rate == 0.2
    rates = [b.drop_path.p for b in model.modules() if isinstance(b, UniversalInvertedBottleneck)
             and b.drop_path is not None]
    assert rates == sorted(rates) and 0 < rates[0] < rates[-1] < 0.2  # linear in depth, below the final rate
    n_body = len(model.block_info)
    assert rates[-1] == pytest.approx(0.2 * (n_body - 2) / n_body)  # the last UIB is the one before the 960 conv
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # identity in eval
        ref = create_model("mobilenet_v4_conv_small", num_classes=3)
        ref.load_state_dict(model.state_dict())  # no extra keys
        torch.testing.assert_close(ref.eval()(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model.stages[3:](model.stages[:3](model.stem(x)))
    torch.manual_seed(1)
    b = model.stages[3:](model.stages[:3](model.stem(x)))
    assert not torch.allclose(a, b)  # random branch drops in training
    for bad in (-0.1, 1.0, float("nan"), True):
        with pytest.raises(MobileNetsError, match="drop_path_rate must be in"):
            create_model("mobilenet_v4_conv_small", drop_path_rate=bad)
    with pytest.raises(MobileNetsError, match="drop_path_rate is for MobileNetV4 models"):
        create_model("mobilenet_v3_small", drop_path_rate=0.1)
    assert create_model("mobilenet_v3_small", drop_path_rate=0.0).config.drop_path_rate == 0.0


def test_drop_path_rate_survives_a_checkpoint(tmp_path):
    model = create_model("mobilenet_v4_hybrid_medium", width=0.5, num_classes=4, drop_path_rate=0.1)
    path = mobilenets.save_checkpoint(model, tmp_path / "m.safetensors", mobilenets.CheckpointMeta(model.config))
    loaded, meta = mobilenets.load_checkpoint(path)
    assert loaded.config == model.config and meta.config.drop_path_rate == 0.1


# ------------------------------------------------------------------------------------------------ timm

timm = pytest.importorskip("timm")


def _attention_parts(module: nn.Module, inputs) -> tuple[torch.Tensor, torch.Tensor, nn.Conv2d] | None:
    """(queries (B, heads, L, key_dim), keys (B, key_dim, M), the key projection) of an attention module:
    ours (MobileMQA, input before its pre-norm) or timm's (MultiQueryAttention2d, input after it); else None."""
    x = inputs[0]
    if isinstance(module, MobileMQA):
        x = module.norm(x)
        kx = module.key_bn(module.key_down(x)) if module.key_down is not None else x
        q, k, proj, heads, key_dim = module.query_proj(x), module.key_proj(kx), module.key_proj, module.heads, \
            module.key_dim
    elif type(module).__name__ == "MultiQueryAttention2d":
        q, k, proj, heads, key_dim = module.query(x), module.key(x), module.key.proj, module.num_heads, \
            module.key_dim
    else:
        return None
    return q.reshape(q.shape[0], heads, key_dim, -1).transpose(2, 3), k.flatten(2), proj


def _is_attention(m: nn.Module) -> bool:
    return isinstance(m, MobileMQA) or type(m).__name__ == "MultiQueryAttention2d"


def randomise_v4(model: nn.Module, seed: int = 0, size: int = 64) -> nn.Module:
    """Random BN affine parameters, layer-scale gammas (0.2-0.6: at their 1e-5 init the attention and UIB
    branches would not show in the logits), and BN running statistics that are wrong but plausible: each BN's
    are the statistics of its actual eval-mode input on random images (set in forward order, so they account
    for the BNs before it), shifted by 0.1 std and scaled by U(0.5, 1.5). The key projections are scaled so
    that every attention block's scores have std 2 (peaked, not one-hot).

    Arbitrary statistics overflow V4's deep residual stacks, and a softmax over scores in the hundreds
    multiplies float32 rounding by their size (measured: 8% of the logit scale between float32 and float64);
    trained networks are far better conditioned, and these keep the float32 error near 1e-6 of the logits."""
    g = torch.Generator().manual_seed(seed)

    def calibrate(bn, inputs):
        x = inputs[0].transpose(0, 1).flatten(1)
        bn.running_mean.copy_(x.mean(1) + torch.randn(bn.num_features, generator=g) * 0.1 * x.std(1))
        # + 0.01: a channel that is all zeros (after a dead ReLU) would get scale 1/sqrt(eps), which multiplies
        # the rounding of a folded conv by ~300
        bn.running_var.copy_((x.var(1) + 0.01) * (torch.rand(bn.num_features, generator=g) + 0.5))

    def temper(module, inputs, output):
        parts = _attention_parts(module, inputs)
        if parts is not None:
            q, k, proj = parts
            scores = q @ k.unsqueeze(1) * q.shape[-1] ** -0.5
            proj.weight.mul_(2.0 / scores.std())

    model.eval()
    x = torch.randn(8, 3, size, size, generator=g)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            elif hasattr(m, "gamma") and isinstance(m.gamma, nn.Parameter):
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=g) * 0.4 + 0.2)
        # pass 1 sets the statistics in forward order; pass 2 sets them again and tempers each attention block
        # after its own norms are set; pass 3 only tempers, so each block's scores end at std 2 for the inputs it
        # finally gets (re-setting statistics after it would undo that)
        for calibrating, tempering in ((True, False), (True, True), (False, True)):
            hooks = [m.register_forward_pre_hook(calibrate) if isinstance(m, nn.BatchNorm2d)
                     else m.register_forward_hook(temper) for m in model.modules()
                     if (calibrating and isinstance(m, nn.BatchNorm2d)) or (tempering and _is_attention(m))]
            try:
                model(x)
            finally:
                for h in hooks:
                    h.remove()
    return model


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("name", V4)
def test_timm_equivalence(tmp_path, name, fmt):
    from .test_weights_torch import assert_same_logits, save

    if fmt == "safetensors" and name in BIG:
        pytest.skip("the key table is the same for both file formats: one format for the large models")
    theirs = randomise_v4(timm.create_model(name.replace("mobilenet_v4", "mobilenetv4"), pretrained=False))
    save(theirs.state_dict(), tmp_path / f"w.{fmt}", fmt)
    model, report = model_from_weights(tmp_path / f"w.{fmt}")
    assert (report.info.format, report.info.model, report.info.width) == ("timm", name, 1.0)
    assert not report.reinitialized and not report.messages
    assert_same_logits(theirs, model, size=64)
    # and converted to our format, the same network
    mobilenets.weights.convert_weights(tmp_path / f"w.{fmt}", tmp_path / "ours.safetensors")
    assert_same_logits(theirs, model_from_weights(tmp_path / "ours.safetensors")[0], size=64)


@pytest.mark.parametrize("alias", ["mobilenetv4_conv_small_050", "mobilenetv4_hybrid_medium_075"])
def test_timm_reduced_width_names(tmp_path, alias):
    """timm's narrower V4s (stem kept at its table width) by their timm names: the same logits."""
    from .test_weights_torch import assert_same_logits

    theirs = randomise_v4(timm.create_model(alias, pretrained=False))
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    ours = create_model(alias, weights=tmp_path / "w.pth")
    assert ours.config.fixed_stem and ours.stem.conv.out_channels == 32
    assert_same_logits(theirs, ours, size=64)


def test_timm_hybrid_features_only_loads_backbone(tmp_path):
    theirs = randomise_v4(timm.create_model("mobilenetv4_hybrid_medium"))
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    backbone = create_model("mobilenet_v4_hybrid_medium", features_only=True, out_strides=(8, 16),
                            weights=tmp_path / "w.pth")
    ref = timm.create_model("mobilenetv4_hybrid_medium", features_only=True, out_indices=(2, 3))
    ref.load_state_dict({k: v for k, v in theirs.state_dict().items() if k in ref.state_dict()})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone.eval()(x), ref.eval()(x)):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_fold_batchnorm_leaves_timms_norm_act_modules():
    """The benchmark exports timm's V4 as the peer: fold_batchnorm folds plain BNs only, so timm's
    BatchNormAct2d (norm + ReLU in one module) keeps its activation."""
    from mobilenets.export import fold_batchnorm

    theirs = randomise_v4(timm.create_model("mobilenetv4_conv_small"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(theirs)(x), theirs(x))


# ------------------------------------------------------------------------------------------------- export

def _export_model(name: str) -> nn.Module:
    """A small V4 with non-trivial BN statistics and layer scales near 1 (so the attention matters)."""
    return randomise_v4(create_model(name, width=0.5, num_classes=10))


def test_onnx_hybrid_with_live_attention(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from mobilenets.export import export_model, load_artifact

    model = _export_model("mobilenet_v4_hybrid_medium")
    report = export_model(model, tmp_path / "m.onnx", format="onnx", input_size=64)
    assert report.max_abs_diff <= 1e-4 * report.logit_scale
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_artifact(tmp_path / "m.onnx", "onnx")(x), ref, atol=1e-4 * np.abs(ref).max())


# TFLite and ExecuTorch take 70-300 s per V4 model on 2 shared cores: Hybrid-M alone has every V4 block kind
# (FusedIB, every UIB instance, MQA with and without key/value downsampling, the BN head); Conv-S adds only the
# plain conv rows V1-V3 already export, Conv-M / Conv-L / Hybrid-L the same blocks (and GELU) in other numbers.
@pytest.mark.slow
@pytest.mark.parametrize("fmt,module", [("tflite", "litert_torch"), ("executorch", "executorch.runtime")])
@pytest.mark.parametrize("name", ["mobilenet_v4_hybrid_medium"])
def test_mobile_formats(name, fmt, module, tmp_path):
    pytest.importorskip(module)
    from mobilenets.export import export_model

    report = export_model(_export_model(name), tmp_path / f"m.{fmt}", format=fmt, input_size=64)
    assert report.format == fmt and report.size_bytes > 0
    assert report.max_abs_diff <= 1e-4 * report.logit_scale


# ----------------------------------------------------------------------------------------------- training

@pytest.mark.slow
def test_train_cli_on_digits(tmp_path):
    """``mobilenets train --model mobilenet_v4_conv_small`` on the built-in digits, with stochastic depth: one
    short epoch end to end, and the checkpoint rebuilds the same model."""
    from .test_train import cli

    out = tmp_path / "run"
    r = cli("train", "--model", "mobilenet_v4_conv_small", "--width", "0.5", "--resolution", "32", "--epochs", "1",
            "--batch-size", "32", "--drop-path-rate", "0.05", "--output", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    model, meta = mobilenets.load_checkpoint(out / "best.safetensors")
    assert meta.config.name == "mobilenet_v4_conv_small" and meta.config.drop_path_rate == 0.05
    assert meta.config.num_classes == 10 and math.isclose(meta.config.width, 0.5)


# ---------------------------------------------------------------------------------------------------- bench

def test_bench_peers_and_plot(tmp_path):
    """`mobilenets bench` times V4 against timm's model (torchvision has none): the same network, ratios named
    after the peer, and the latency-vs-top-1 plot places V4 at its published top-1."""
    from mobilenets.export.bench import BenchConfig, Row, _peer, _plot, _ratios

    assert {"mobilenet_v4_conv_small", "mobilenet_v4_conv_medium"} <= set(BenchConfig().models)
    label, peer = _peer("mobilenet_v4_conv_small")
    assert label == "timm" and type(peer).__module__.startswith("timm")
    assert sum(p.numel() for p in peer.parameters()) == \
        sum(p.numel() for p in create_model("mobilenet_v4_conv_small").parameters())
    assert _peer("mobilenet_v2")[0] == "tv"
    rows = [Row("mobilenet_v4_conv_small", p, lat, None) for p, lat in
            (("timm eager", 10.0), ("ours best pytorch", 5.0), ("ours onnxruntime", 4.0), ("timm onnxruntime", 5.0))]
    rows += [Row("mobilenet_v2", p, lat, None) for p, lat in (("tv eager", 12.0), ("ours best pytorch", 6.0))]
    ratios = {r["model"]: r for r in _ratios(rows)}
    assert ratios["mobilenet_v4_conv_small"]["best pytorch speedup vs timm eager"] == pytest.approx(2.0)
    assert ratios["mobilenet_v4_conv_small"]["ours/timm onnxruntime"] == pytest.approx(0.8)
    assert ratios["mobilenet_v2"]["best pytorch speedup vs tv eager"] == pytest.approx(2.0)
    _plot(rows, tmp_path / "bench.png", BenchConfig())
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_ssdlite_expansion_tap_but_stage_ends_work():
    """The SSDLite C4 tap reads an inverted residual's expansion; V4's UIBs are refused in one line, while
    stage-end taps (and dilated backbones) work."""
    from mobilenets.features import downsampling_expansion_tap

    model = create_model("mobilenet_v4_conv_medium")
    with pytest.raises(MobileNetsError, match="no inverted-residual block downsamples to stride 32"):
        downsampling_expansion_tap(model, 32)
    dilated = create_model("mobilenet_v4_hybrid_medium", output_stride=16, width=0.5)
    assert max(b.stride for b in dilated.block_info) == 16
    assert list(dilated.state_dict()) == list(create_model("mobilenet_v4_hybrid_medium", width=0.5).state_dict())
    with torch.no_grad():
        assert dilated.eval().forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 4
