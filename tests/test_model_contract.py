"""The model API timm's and torchvision's users rely on, checked as their own generic model tests check their
models (timm ``tests/test_models.py``; torchvision ``test/test_models.py``, ``test/test_backbone_utils.py``):
TorchScript, torch.export, torch.fx / ``create_feature_extractor``, timm's classifier / pooling / intermediates
/ pruning / grad-checkpointing / ``pretrained_cfg`` / ``feature_info`` contract. Every registered classifier,
small inputs (64-96 px) and small widths.
"""

from __future__ import annotations

import io
import math
import random

import pytest
import torch
from torch import nn

import mobilenets
from mobilenets import MobileNetsError

from .conftest import ALL_MODELS

timm = pytest.importorskip("timm")
feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
from timm.models._features import FeatureGetterNet  # noqa: E402

SIZE = 64

# torch 2.14 deprecates TorchScript; torchvision still guarantees scriptable models, and so do we
# (and scripting an fx GraphModule warns about torch's own GraphModule.__init__)
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning"),
              pytest.mark.filterwarnings("ignore:The TorchScript type system doesn't support:UserWarning")]


def _model(name, **kw):
    kw.setdefault("width", 0.5)
    return mobilenets.create_model(name, **kw)


def _x(n=2, size=SIZE):
    return torch.randn(n, 3, size, size)


def _close(a, b):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _close(u, v)
        return
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---- timm: default cfgs, classifier and pooling (test_model_default_cfgs) ----

@pytest.mark.parametrize("name", ALL_MODELS)
def test_timm_default_cfg_classifier_and_pooling(name):
    model = _model(name).eval()
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size > 0
    cfg = model.default_cfg
    assert cfg is not model.pretrained_cfg and cfg == model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["pool_size"] == (7, 7)
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert model.get_classifier() is model.classifier

    x = _x(1, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, model.num_features, 3, 3)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model.forward(x).shape == (1, model.head_hidden_size)
        assert torch.equal(model.forward(x), model.forward_head(feats, pre_logits=True))
        model.reset_classifier(0, "")  # no classifier, no pooling: per-pixel head features, as timm's
        out = model.forward(x)
        assert out.shape == (1, model.head_hidden_size, 3, 3)
        if model.head_conv is not None:  # V3's 1x1 head conv and its activation at every position
            _close(out, model.head_act(model.head_conv(feats)))
        else:
            assert torch.equal(out, feats)
        model.reset_classifier(4, "max")
        assert model.forward(x).shape == (1, 4)
        _close(model.forward_head(feats, pre_logits=True)[:, :8],
               (model.head_act(model.head_conv(feats.amax((2, 3), keepdim=True))).flatten(1)
                if model.head_conv is not None else feats.amax((2, 3)))[:, :8])
    assert model.config.num_classes == 4 and model.config.global_pool == "max"

    # the same through the constructor (timm: create_model(num_classes=0, global_pool=''))
    headless = _model(name, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert headless(x).shape == (1, headless.head_hidden_size, 3, 3)
    with pytest.raises(MobileNetsError, match="global_pool"):
        model.reset_classifier(10, "")
    with pytest.raises(MobileNetsError, match="global_pool"):
        model.reset_classifier(0, "catavgmax")


def test_headless_config_rebuilds_from_checkpoint(tmp_path):
    model = _model("mobilenet_v3_small", num_classes=0, global_pool="").eval()
    path = tmp_path / "m.safetensors"
    mobilenets.save_checkpoint(model, path)
    again, _ = mobilenets.model_from_weights(path)
    assert again.config == model.config and again.global_pool == ""
    x = _x(1)
    with torch.no_grad():
        out = again.eval()(x)
        assert out.dim() == 4
        torch.testing.assert_close(out, model(x))


# ---- timm: pretrained_cfg for timm.data.resolve_data_config ----

def test_resolve_data_config_fresh_model():
    model = mobilenets.create_model("mobilenet_v2")
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg == {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": mobilenets.IMAGENET.mean,
                   "std": mobilenets.IMAGENET.std, "crop_pct": 0.875, "crop_mode": "center"}


@pytest.mark.parametrize("fmt", ["torchvision", "tf"])
def test_resolve_data_config_follows_the_weights(tmp_path, fmt):
    """PyTorch weights mean ImageNet mean/std; TF files (Keras, TFLite) [-1, 1] inputs (mean = std = 0.5), as
    the loaders record in ``LoadReport.info.preprocessing``; a features_only model says the same."""
    src = mobilenets.create_model("mobilenet_v3_small", width=0.75)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)  # our keys: read as a mobilenets state dict (PyTorch conventions)
    kw = {"tf": True} if fmt == "tf" else {}
    model, report = mobilenets.model_from_weights(path, **kw)
    pre = report.info.preprocessing
    assert pre == (mobilenets.TF_INCEPTION if fmt == "tf" else mobilenets.IMAGENET)
    features = mobilenets.create_model("mobilenet_v3_small", weights=path, features_only=True, **kw)
    for m in (model, features):
        cfg = timm.data.resolve_data_config({}, model=m)
        assert cfg["mean"] == pre.mean and cfg["std"] == pre.std
        assert cfg["input_size"] == (3, pre.crop, pre.crop) and cfg["crop_pct"] == pre.crop / pre.resize
        assert cfg["interpolation"] == pre.interpolation
    # load_weights into an existing model updates it too
    tf_options = {"tf_padding": True, "bn_eps": 1e-3} if fmt == "tf" else {}
    fresh = mobilenets.create_model("mobilenet_v3_small", width=0.75, **tf_options)
    mobilenets.load_weights(fresh, path, **kw)
    assert fresh.pretrained_cfg["mean"] == pre.mean
    # and a checkpoint of the loaded model keeps it
    mobilenets.save_checkpoint(model, tmp_path / "m.safetensors")
    assert mobilenets.load_checkpoint(tmp_path / "m.safetensors")[1].preprocessing == pre


@pytest.mark.parametrize("file", ["mobilenet_v3_small_1.0_224.uint8.tflite", "mobilenet_v1_0.25_224.h5"])
def test_resolve_data_config_real_tf_files(pretrained_dir, file):
    model, _ = mobilenets.model_from_weights(pretrained_dir / file)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5) and cfg["input_size"] == (3, 224, 224)


# ---- timm: feature_info, forward_intermediates, prune_intermediate_layers, feature wrappers ----

@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("output_stride", [32, 8])
def test_timm_forward_intermediates(name, output_stride):
    model = _model(name, output_stride=output_stride).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))  # timm's own wrapper accepts it
    channels, reductions = info.channels(), info.reduction()
    assert channels == model.feature_info.channels() == [f.channels for f in model.feature_info]
    assert reductions == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    x = _x(2, 72)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == len(channels)
        for c, r, o in zip(channels, reductions, inter):
            assert o.shape == (2, c, math.ceil(72 / r), math.ceil(72 / r)) and torch.isfinite(o).all()
        _close(final, model.forward_features(x))
        _close(inter[-1], final)
        # indices: last n, a list with negatives, early stop
        assert [o.shape for o in model.forward_intermediates(x, indices=2, intermediates_only=True)] == \
            [o.shape for o in inter[-2:]]
        picked = model.forward_intermediates(x, indices=[0, -2], intermediates_only=True, stop_early=True)
        _close(picked, [inter[0], inter[-2]])
        model.set_grad_checkpointing()
        final3, _ = model.forward_intermediates(x)  # eval: no checkpointing, same output
        _close(final3, final)
    with pytest.raises(MobileNetsError, match="out of range"):
        model.forward_intermediates(x, indices=[5])
    with pytest.raises(MobileNetsError, match="stop_early"):
        model.forward_intermediates(x, stop_early=True)
    with pytest.raises(MobileNetsError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_prune_intermediate_layers_and_timm_feature_wrappers(name):
    model = _model(name).eval()
    x = _x(1)
    with torch.no_grad():
        _, inter = model.forward_intermediates(x)
        ours = mobilenets.FeatureExtractor(model, (4, 8, 16))(x)
        # timm's wrappers over our model: FeatureListNet (by feature_info module names), FeatureGetterNet
        # (forward_intermediates + prune_intermediate_layers)
        listnet = timm.models.FeatureListNet(_copy(model), out_indices=(1, 2, 3), flatten_sequential=True)
        _close(listnet(x), inter[1:4])
        getter = FeatureGetterNet(_copy(model), out_indices=(1, 2, 3))
        _close(getter(x), inter[1:4])
        _close(ours, inter[1:4])

        pruned = _copy(model)
        assert pruned.prune_intermediate_layers([1, -3]) == [1, 2]
        assert len(pruned.stages) == (2 if model._stem_tap else 3) and pruned.head_conv is None
        _close(pruned.forward_intermediates(x, indices=[1, 2], intermediates_only=True), inter[1:3])
        _close(pruned(x), inter[2])  # no head: the last kept map
        assert pruned.num_features == pruned.head_hidden_size == inter[2].shape[1]
        pruned.reset_classifier(3, "avg")  # a classifier on the truncated body
        assert pruned(x).shape == (1, 3)
    keep_head = _copy(model)
    assert keep_head.prune_intermediate_layers(2, prune_head=False) == [3, 4]
    with torch.no_grad():
        _close(keep_head(x), model(x))
    with pytest.raises(MobileNetsError, match="prune_head"):
        _copy(model).prune_intermediate_layers(2 * [1], prune_head=False)


@pytest.mark.parametrize("timm_name", ["mobilenetv1_100", "mobilenetv2_050", "mobilenetv3_large_100",
                                       "mobilenetv3_small_100"])
def test_same_intermediates_and_unpooled_head_as_timm(tmp_path, timm_name):
    """timm's own model with random weights and ours loaded from it: the same feature_info, the same
    forward_intermediates, the same unpooled head after reset_classifier(0, ''). One documented difference:
    V2's stride-32 tap is the end of our last stage, after the 1x1 conv to 1280 (torchvision's ``features``
    end); timm's is the 320-channel block before it."""
    from .test_weights_torch import randomise, save

    theirs = randomise(timm.create_model(timm_name))
    save(theirs.state_dict(), tmp_path / "w.pth", "pth")
    ours, _ = mobilenets.model_from_weights(tmp_path / "w.pth")
    ours.eval()
    v2 = timm_name.startswith("mobilenetv2")
    pairs = [(f["num_chs"], f["reduction"]) for f in theirs.feature_info]
    if v2:
        pairs[-1] = (ours.num_features, 32)
    assert [(f.channels, f.stride) for f in ours.feature_info] == pairs
    x = _x(1)
    with torch.no_grad():
        final, inter = theirs.forward_intermediates(x)
        final2, inter2 = ours.forward_intermediates(x)
        _close(final2, final)
        _close(inter2[:-1] if v2 else inter2, inter[:-1] if v2 else inter)
        for m in (theirs, ours):
            m.reset_classifier(0, "")
        _close(ours(x), theirs(x))


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_feature_info_is_timm_dicts_and_our_attributes():
    info = _model("mobilenet_v3_large").feature_info[1]
    assert dict(info) == {"module": "stages.1", "num_chs": 16, "reduction": 4}
    assert (info.module, info.channels, info.stride) == ("stages.1", 16, 4)
    assert repr(info) == "FeatureInfo(module='stages.1', channels=16, stride=4)"
    assert info == mobilenets.FeatureInfo("stages.1", 16, 4)


# ---- timm: grad checkpointing ----

@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v3_large"])
def test_grad_checkpointing_recomputes_stages_with_equal_gradients_and_bn_stats(name):
    torch.manual_seed(0)
    plain = _model(name, num_classes=7).train()
    ckpt = _copy(plain)
    ckpt.set_grad_checkpointing()
    calls = []
    ckpt.stages[1].register_forward_pre_hook(lambda *a: calls.append(1))
    x, y = _x(4), torch.randint(0, 7, (4,))
    for m in (plain, ckpt):
        torch.manual_seed(1)  # the same dropout mask
        nn.functional.cross_entropy(m(x), y).backward()
    assert len(calls) == 2  # the forward pass, and the recomputation in the backward pass
    for (k, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=k)
    for (k, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b, c), k  # running statistics updated once, not twice


def test_grad_checkpointing_features_only():
    from mobilenets.features import FeatureExtractor, Tap

    plain = _model("mobilenet_v3_small").train()
    taps = [Tap(2, "expansion"), Tap(5), Tap(10)]
    fe, ckpt = FeatureExtractor(plain, taps=taps), FeatureExtractor(_copy(plain), taps=taps)
    ckpt.set_grad_checkpointing()
    calls = []
    ckpt.stages[2][1].register_forward_pre_hook(lambda *a: calls.append(1))
    x = _x(4)
    for m in (fe, ckpt):
        sum(o.square().mean() for o in m(x)).backward()
    assert len(calls) == 2
    for (k, p), q in zip(fe.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=k)
    for (k, b), c in zip(fe.named_buffers(), ckpt.buffers()):
        assert torch.equal(b, c), k


# ---- TorchScript (torchvision's _check_jit_scriptable, timm's test_model_forward_torchscript) ----

def _check_script(model, x):
    model.eval()
    with torch.no_grad():
        eager = model(x)
        scripted = torch.jit.script(model)
        _close(scripted(x), eager)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        buf.seek(0)
        _close(torch.jit.load(buf)(x), eager)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_torchscript_matches_eager(name):
    _check_script(_model(name, width=0.35), _x(1))


@pytest.mark.parametrize("options", [{"tf_padding": True, "bn_eps": 1e-3}, {"output_stride": 16},
                                     {"num_classes": 0, "global_pool": ""}, {"global_pool": "max"},
                                     {"grad_checkpointing": True}])
def test_torchscript_options(options):
    options = dict(options)
    checkpointing = options.pop("grad_checkpointing", False)
    model = _model("mobilenet_v3_small", width=0.35, **options)
    model.set_grad_checkpointing(checkpointing)
    _check_script(model, _x(1, 67))


def test_torchscript_features_only_with_inner_taps():
    from mobilenets.features import FeatureExtractor, Tap

    model = _model("mobilenet_v3_large", width=0.35)
    taps = [Tap(-1), Tap(3, "expansion"), Tap(3, "depthwise"), Tap(5), Tap(12, "expansion")]
    _check_script(FeatureExtractor(model, taps=taps), _x(1))
    _check_script(mobilenets.create_model("mobilenet_v1", width=0.25, features_only=True), _x(1))


# ---- torch.export (dynamic batch) ----

# export takes seconds per model on one core: two models run always, the rest with the slow tests
_EXPORT_FAST = ("mobilenet_v2", "mobilenet_v3_small")


@pytest.mark.parametrize("features_only", [False, True])
@pytest.mark.parametrize("name", [n if n in _EXPORT_FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in ALL_MODELS])
def test_torch_export_dynamic_batch_matches_eager(name, features_only):
    # features_only backbones dilated (output stride 16), as dense heads use them
    model = _model(name, width=0.35, features_only=features_only, tf_padding=name == "mobilenet_v2",
                   output_stride=16 if features_only else 32).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (_x(2),), dynamic_shapes={"x": {0: batch}})
    for n in (1, 3):
        x = _x(n)
        with torch.no_grad():
            _close(ep.module()(x), model(x))


# ---- torch.fx: symbolic trace, torchvision's create_feature_extractor on arbitrary nodes, fx + script ----

@pytest.mark.parametrize("name", ALL_MODELS)
def test_fx_trace_and_feature_extractor_on_random_nodes(name):
    """torchvision's test_backbone_utils: 10 random nodes (tensor-valued) in train and eval mode, forward and
    backward; fx then script; symbolic trace equals eager (timm's test_model_forward_fx)."""
    model = _model(name, width=0.35, tf_padding=name.endswith("small")).eval()
    x = _x(2)
    with torch.no_grad():
        _close(torch.fx.symbolic_trace(model)(x), model(x))
    train_nodes, eval_nodes = feature_extraction.get_graph_node_names(model)
    assert train_nodes == eval_nodes and any(n.startswith("stages.3.") for n in eval_nodes)
    skip = ("getitem", "floordiv", "size", "chunk", "_assert", "eq", "dim", "getattr")
    nodes = [n for n in eval_nodes if not any(s in n for s in skip)]
    with torch.no_grad():  # tensor-valued nodes only (attention blocks compute sizes: ints)
        values = feature_extraction.create_feature_extractor(model, return_nodes=nodes)(x)
    nodes = [n for n in nodes if isinstance(values[n], torch.Tensor)]
    pick = random.Random(0).sample(nodes, 10)
    fe = feature_extraction.create_feature_extractor(model.train(), train_return_nodes=pick,
                                                     eval_return_nodes=pick)
    for m in (fe, torch.jit.script(fe)):  # torchvision's test_forward_backward and test_jit_forward_backward
        out = m(x)
        assert sorted(out) == sorted(pick)
        sum(o.float().mean() for o in out.values()).backward()
    assert any(p.grad is not None for p in fe.parameters())
    # the stage ends through fx equal our FeatureExtractor's maps
    fe = feature_extraction.create_feature_extractor(model.eval(), return_nodes=[f.module for f in
                                                                                  model.feature_info])
    with torch.no_grad():
        _close(list(fe(x).values()), mobilenets.FeatureExtractor(model, (2, 4, 8, 16, 32))(x))
        _close(list(torch.jit.script(fe)(x).values()), list(fe(x).values()))  # fx + script


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small"])
def test_fx_features_only(name):
    fe = mobilenets.create_model(name, width=0.35, features_only=True, tf_padding=True).eval()
    x = _x(1, 65)
    with torch.no_grad():
        traced = torch.fx.symbolic_trace(fe)
        _close(traced(x), fe(x))
        _close(torch.jit.script(traced)(x), fe(x))  # fx then script


# ---- timm's features_only and backward checks, torchvision's input backprop ----

@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("output_stride,reductions", [(32, [4, 8, 16, 32]), (16, [4, 8, 16])])
def test_timm_features_only_contract(name, output_stride, reductions):
    model = mobilenets.create_model(name, width=0.35, features_only=True, output_stride=output_stride).eval()
    channels = model.feature_info.channels()
    assert model.feature_info.reduction() == reductions
    assert model.default_cfg["input_size"] == (3, 224, 224)
    x = _x(1, 96)
    with torch.no_grad():
        out = model(x)
        assert [o.shape[1] for o in out] == channels and all(torch.isfinite(o).all() for o in out)
        assert [o.shape[-1] for o in out] == [96 // r for r in reductions]
        full = mobilenets.create_model(name, width=0.35, output_stride=output_stride).eval()
        full.load_state_dict(model.state_dict(), strict=False)
        _close(out[-1], full.forward_features(x))  # the last map is the whole body's


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_reaches_every_parameter_and_the_input(name):
    model = _model(name, width=0.35, num_classes=42).train()
    x = _x(2).requires_grad_(True)
    out = model(x)
    out.mean().backward()
    assert out.shape == (2, 42) and x.grad is not None
    assert all(p.grad is not None for p in model.parameters())
