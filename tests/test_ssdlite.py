"""SSDLite detectors (V2 section 6.2, V3 section 6.3): shapes, default boxes, equivalence with torchvision's
ssdlite320_mobilenet_v3_large, the loss, box coding, and the torch / numpy post-processing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchvision
from torchvision import tv_tensors
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou, clip_boxes_to_image, nms
from torchvision.transforms.v2.functional import convert_bounding_box_format

import mobilenets
from mobilenets import MobileNetsError
from mobilenets.detection import (
    RECIPES,
    DetectorConfig,
    decode_boxes,
    encode_boxes,
    match_default_boxes,
    multibox_loss,
    postprocess_detections,
    postprocess_numpy,
)
from mobilenets.registry import list_models
from mobilenets.weights.torchvision_detection import detect, load_torchvision_ssdlite

DETECTORS = ["ssdlite_mobilenet_v1", "ssdlite_mobilenet_v2", "ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_small"]
SMALL_WIDTH = {"ssdlite_mobilenet_v1": 0.25}  # the rest at 0.35: small and fast


def _small(name: str, config: str, **kw):
    return mobilenets.create_model(name, config=config, width=SMALL_WIDTH.get(name, 0.35), **kw)


def test_registered_as_detectors():
    assert set(DETECTORS) <= set(list_models(task="detection"))
    assert not set(DETECTORS) & set(list_models())  # not among the classifiers


@pytest.mark.parametrize("config", ["paper", "torchvision"])
@pytest.mark.parametrize("name", DETECTORS)
def test_shapes(name, config):
    model = _small(name, config, num_classes=7).eval()
    size = (96, 130)  # non-square, and 130 is not a power of two: every map size is ceil(n / 2) of the last
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, *size))
        cls, box = model(torch.randn(2, 3, *size))
    assert [tuple(f.shape[-2:]) for f in feats] == model.map_sizes(size)
    assert model.map_sizes(320) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]  # V2 section 6.2
    assert [f.shape[1] for f in feats] == [f.channels for f in model.feature_info]
    boxes_per_map = RECIPES[config].boxes_per_location
    expected = sum(h * w * n for (h, w), n in zip(model.map_sizes(size), boxes_per_map))
    assert cls.shape == (2, expected, 7) and box.shape == (2, expected, 4)
    assert model.default_boxes(size).shape == (expected, 4)


@pytest.mark.parametrize("name,c4,c5", [("ssdlite_mobilenet_v2", 576, 1280), ("ssdlite_mobilenet_v3_large", 672, 960),
                                        ("ssdlite_mobilenet_v3_small", 288, 576), ("ssdlite_mobilenet_v1", 512, 1024)])
def test_taps_and_extra_layers(name, c4, c5):
    """The papers' taps (C4 at stride 16, C5 at 32) and the extra layers 512, 256, 256, 128 at width 1."""
    with torch.device("meta"):
        model = mobilenets.create_model(name)
    assert [(f.channels, f.stride) for f in model.feature_info] == [
        (c4, 16), (c5, 32), (512, 64), (256, 128), (256, 256), (128, 512)]
    e = model.extras[0]
    assert (e.conv_pw.out_channels, e.conv_dw.groups, e.conv_dw.stride, e.conv_out.out_channels) == (256, 256, (2, 2),
                                                                                                       512)
    p = model.cls_head[3]
    assert p.conv_dw.groups == 256 and p.conv_pw.bias is not None and p.conv_pw.kernel_size == (1, 1)
    keys = model.state_dict().keys()
    assert {"extras.0.conv_pw.weight", "extras.3.bn3.running_var", "cls_head.3.conv_dw.weight",
            "box_head.5.conv_pw.bias", "backbone.stem.conv.weight"} <= set(keys)


def test_reduced_tail():
    """V3 "†": every layer from C4's block to C5 halved (C4's expansion itself stays 672)."""
    with torch.device("meta"):
        full = mobilenets.create_model("ssdlite_mobilenet_v3_large", reduced_tail=False)
        half = mobilenets.create_model("ssdlite_mobilenet_v3_large", reduced_tail=True)
        tv_default = mobilenets.create_model("ssdlite_mobilenet_v3_large", config="torchvision")
    assert [f.channels for f in full.feature_info[:2]] == [672, 960]
    assert [f.channels for f in half.feature_info[:2]] == [672, 480]
    assert tv_default.config.reduced_tail and not mobilenets.create_model(
        "ssdlite_mobilenet_v3_small", config="paper", width=0.35).config.reduced_tail


def test_default_boxes_torchvision_config():
    """torchvision's DefaultBoxGenerator([[2, 3]] * 6, 0.2, 0.95): 6 per location, 3,234 at 320, bit for bit."""
    model = _small("ssdlite_mobilenet_v3_large", "torchvision")
    boxes = model.default_boxes(320)
    assert boxes.shape == (3234, 4)
    gen = torchvision.models.detection.anchor_utils.DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    feats = [torch.zeros(1, 1, h, w) for h, w in model.map_sizes(320)]
    ref = gen(ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)]), feats)[0]
    assert torch.equal(boxes, ref)
    assert torch.equal(model.default_boxes(), boxes)  # the config's image_size


def test_default_boxes_paper_config():
    """TF ssd_anchor_generator: 3 boxes on the first map ((0.1, 1), (0.2, 2), (0.2, 0.5)), 6 elsewhere (ratios
    1, 2, 0.5, 3, 0.3333 at s_k and 1 at sqrt(s_k s_k+1)), scales 0.2 .. 0.95: 2,034 at 320; sizes relative to
    the shorter side (square boxes stay square on a non-square input)."""
    model = _small("ssdlite_mobilenet_v3_small", "paper")
    boxes = model.default_boxes(320)
    assert boxes.shape == (3 * 400 + 6 * (100 + 25 + 9 + 4 + 1), 4) == (2034, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    r2 = math.sqrt(2)
    expected_first = torch.tensor([[32, 32], [64 * r2, 64 / r2], [64 / r2, 64 * r2]])  # at 320: 0.1, 0.2 of 320
    torch.testing.assert_close(wh[:3], expected_first)
    torch.testing.assert_close(ctr[:3], torch.full((3, 2), 8.0))  # (0 + 0.5) / 20 of 320
    s = [0.2 + 0.75 * k / 5 for k in range(6)] + [1.0]
    second = wh[1200:1206] / 320  # second map, first location
    ratios = [1.0, 2.0, 0.5, 3.0, 0.3333]
    expected = [[s[1] * math.sqrt(r), s[1] / math.sqrt(r)] for r in ratios] + [[math.sqrt(s[1] * s[2])] * 2]
    torch.testing.assert_close(second, torch.tensor(expected), rtol=1e-5, atol=0)
    wide = model.default_boxes((320, 640))  # TF normalises to the shorter side: the 0.1 box is 32x32 pixels
    torch.testing.assert_close(wide[0, 2:] - wide[0, :2], torch.tensor([32.0, 32.0]))
    tv_wide = _small("ssdlite_mobilenet_v3_small", "torchvision").default_boxes((320, 640))
    torch.testing.assert_close(tv_wide[0, 2:] - tv_wide[0, :2], torch.tensor([0.2 * 640, 0.2 * 320]))


def _randomised_torchvision():
    tv = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in tv.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var") or (name.endswith(".weight") and t.ndim == 1):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)  # BN scale and running variance
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return tv.eval()


@pytest.fixture(scope="module")
def torchvision_pair():
    torch.manual_seed(0)
    tv = _randomised_torchvision()
    ours = mobilenets.create_model("ssdlite_mobilenet_v3_large", config="torchvision").eval()
    assert detect(tv.state_dict().keys())
    load_torchvision_ssdlite(ours, tv.state_dict())
    return tv, ours


def test_torchvision_equivalence(torchvision_pair):
    """torchvision's state dict (random weights, random BN statistics) loads through the key table and gives
    the same class logits and box regressions (1e-4 relative; measured: bit-identical), default boxes and
    final detections (torchvision's GeneralizedRCNNTransform maps [0, 1] to [-1, 1] at 320x320: both models
    get that tensor)."""
    tv, ours = torchvision_pair
    x = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        feats = list(tv.backbone(x).values())
        ref = tv.head(feats)
        cls, box = ours(x)
    for a, b in ((cls, ref["cls_logits"]), (box, ref["bbox_regression"])):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    anchors = tv.anchor_generator(ImageList(x, [(320, 320)] * 2), feats)
    assert torch.equal(ours.default_boxes(320), anchors[0])
    ref_det = tv.postprocess_detections(ref, anchors, [(320, 320)] * 2)
    det = ours.postprocess(cls, box, [(320, 320)] * 2)
    for r, d in zip(ref_det, det):
        assert len(r["boxes"]) == 300  # random weights: plenty of candidates
        assert torch.equal(d["labels"], r["labels"])
        torch.testing.assert_close(d["boxes"], r["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(d["scores"], r["scores"], rtol=1e-4, atol=0)


def test_load_torchvision_is_all_or_nothing(torchvision_pair):
    tv, _ = torchvision_pair
    paper = _small("ssdlite_mobilenet_v3_large", "paper")
    with pytest.raises(MobileNetsError, match="config='torchvision'"):
        load_torchvision_ssdlite(paper, tv.state_dict())
    other = mobilenets.create_model("ssdlite_mobilenet_v3_large", config="torchvision", num_classes=21)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(MobileNetsError, match="of another shape.*cls_head"):
        load_torchvision_ssdlite(other, tv.state_dict())
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    with pytest.raises(MobileNetsError, match="not a torchvision"):
        load_torchvision_ssdlite(other, {"features.0.0.weight": torch.zeros(1)})


def _boxes(n: int, g: torch.Generator, size: int = 320) -> tv_tensors.BoundingBoxes:
    xy = torch.rand(n, 2, generator=g) * (size - 70)
    wh = torch.rand(n, 2, generator=g) * 140 + 8
    return tv_tensors.BoundingBoxes(torch.cat([xy, (xy + wh).clamp(max=size)], 1), format="XYXY",
                                    canvas_size=(size, size))


def _targets(g: torch.Generator, counts=(5, 1, 0), num_classes: int = 91) -> list[dict]:
    return [{"boxes": _boxes(n, g), "labels": torch.randint(1, num_classes, (n,), generator=g)} for n in counts]


def test_loss_equals_torchvision_compute_loss():
    """Same matches as SSDMatcher, same loss as SSD.compute_loss (smooth-L1 + 3:1 hard-negative softmax CE),
    with an image without boxes in the batch."""
    g = torch.Generator().manual_seed(3)
    tv = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    default_boxes = _small("ssdlite_mobilenet_v3_large", "torchvision").default_boxes(320)
    n, a = 3, default_boxes.shape[0]
    cls, box = torch.randn(n, a, 91, generator=g), torch.randn(n, a, 4, generator=g)
    targets = _targets(g)
    plain = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for t in targets]
    matched = [tv.proposal_matcher(box_iou(t["boxes"], default_boxes)) if len(t["boxes"])
               else torch.full((a,), -1, dtype=torch.int64) for t in plain]
    for t, m in zip(plain, matched):
        assert torch.equal(match_default_boxes(t["boxes"], default_boxes, "torchvision"), m)
    ref = tv.compute_loss(plain, {"cls_logits": cls, "bbox_regression": box}, [default_boxes] * n, matched)
    ours = multibox_loss(cls, box, targets, default_boxes, "torchvision")
    torch.testing.assert_close(ours["box"], ref["bbox_regression"], rtol=1e-5, atol=0)
    torch.testing.assert_close(ours["cls"], ref["classification"], rtol=1e-5, atol=0)
    torch.testing.assert_close(ours["loss"], ref["bbox_regression"] + ref["classification"])


@pytest.mark.parametrize("label", [0, -1, 5])
def test_loss_refuses_labels_outside_the_class_slots(label):
    """Labels are 1..K with K + 1 class slots: a background (0), negative or too large label is one line, even on
    a box that matches no default box."""
    default_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]])
    target = {"boxes": torch.tensor([[100.0, 100.0, 110.0, 110.0], [0.0, 0.0, 10.0, 10.0]]),
              "labels": torch.tensor([label, 1])}
    with pytest.raises(MobileNetsError, match=f"a target label is {label}, the detector has 5 class slots"):
        multibox_loss(torch.zeros(1, 2, 5), torch.zeros(1, 2, 4), [target], default_boxes, "torchvision")


def test_box_loss_and_gradient_on_positives_only():
    """The box loss sums over the matched default boxes alone; the others get no box gradient (they are encoded
    against themselves and masked, not gathered)."""
    default_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    box = torch.randn(1, 2, 4, requires_grad=True)
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]  # = default box 0
    out = multibox_loss(torch.zeros(1, 2, 3), box, targets, default_boxes, "torchvision")
    out["box"].backward()
    expected = torch.nn.functional.smooth_l1_loss(box[0, 0].detach(), torch.zeros(4), reduction="sum")  # codes 0
    torch.testing.assert_close(out["box"].detach(), expected)
    assert torch.equal(box.grad[0, 1], torch.zeros(4)) and box.grad[0, 0].abs().sum() > 0


def test_paper_loss_is_focal_over_every_box_normalised_by_matches():
    """TF: sigmoid focal (alpha 0.75, gamma 2) over every default box and class slot (negatives all zeros,
    background included), / #positives; smooth-L1 on positives / (#positives * 4)."""
    g = torch.Generator().manual_seed(4)
    default_boxes = _small("ssdlite_mobilenet_v3_small", "paper").default_boxes(320)
    n, a, k = 2, default_boxes.shape[0], 5
    cls, box = torch.randn(n, a, k, generator=g), torch.randn(n, a, 4, generator=g)
    targets = _targets(g, counts=(3, 2), num_classes=k)
    out = multibox_loss(cls, box, targets, default_boxes, "paper")
    onehot, pos, codes, preds = torch.zeros(n, a, k), [], [], []
    for i, t in enumerate(targets):
        m = match_default_boxes(t["boxes"].as_subclass(torch.Tensor), default_boxes, "paper")
        p = torch.where(m >= 0)[0]
        onehot[i, p, t["labels"][m[p]]] = 1
        pos.append(len(p))
        codes.append(encode_boxes(t["boxes"].as_subclass(torch.Tensor)[m[p]], default_boxes[p]))
        preds.append(box[i, p])
    prob = torch.sigmoid(cls)
    p_t = onehot * prob + (1 - onehot) * (1 - prob)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(cls, onehot, reduction="none")
    focal = (0.75 * onehot + 0.25 * (1 - onehot)) * (1 - p_t) ** 2 * ce
    num_pos = sum(pos)
    torch.testing.assert_close(out["cls"], focal.sum() / num_pos)
    diff = (torch.cat(preds) - torch.cat(codes)).abs()
    huber = torch.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).sum()
    torch.testing.assert_close(out["box"], huber / (num_pos * 4))


def test_matching_forces_each_ground_truths_best_default_box():
    """A tiny box overlaps nothing at IoU 0.5 but still gets its best default box; where one default box is
    the best of two identical ground truths, torchvision gives it to the last, TF's ArgMaxMatcher to the first."""
    default_boxes = _small("ssdlite_mobilenet_v3_small", "paper").default_boxes(320)
    tiny = torch.tensor([[100.0, 100.0, 104.0, 104.0]])
    best = box_iou(tiny, default_boxes).argmax()
    for config in ("paper", "torchvision"):
        m = match_default_boxes(tiny, default_boxes, config)
        assert torch.nonzero(m >= 0).flatten().tolist() == [int(best)]
    twins = torch.tensor([[40.0, 40.0, 120.0, 140.0]] * 2)
    best = box_iou(twins[:1], default_boxes).argmax()
    assert match_default_boxes(twins, default_boxes, "torchvision")[best] == 1
    assert match_default_boxes(twins, default_boxes, "paper")[best] == 0


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(5)
    anchors = _boxes(500, g).as_subclass(torch.Tensor)
    boxes = _boxes(500, g).as_subclass(torch.Tensor)
    codes = encode_boxes(boxes, anchors)
    torch.testing.assert_close(decode_boxes(codes, anchors), boxes, rtol=0, atol=1e-3)
    codes = torch.randn(500, 4, generator=g)
    torch.testing.assert_close(encode_boxes(decode_boxes(codes, anchors), anchors), codes, rtol=0, atol=1e-4)
    big = torch.tensor([[0.0, 0.0, 100.0, 100.0]])  # torchvision's clamp: dw / 5 <= log(1000 / 16)
    clamped = decode_boxes(torch.tensor([[0.0, 0.0, 50.0, 0.0]]), big, clamp=math.log(1000 / 16))
    assert clamped[0, 2] - clamped[0, 0] == pytest.approx(100 * 1000 / 16, rel=1e-5)


@pytest.mark.parametrize("config", ["paper", "torchvision"])
def test_numpy_postprocess_equals_torch(config):
    """The numpy twin: the same detections (labels identical, boxes to within a float32 ulp at 320 px,
    scores within 1e-5) on random outputs, with clipping to non-square images."""
    model = _small("ssdlite_mobilenet_v3_small", config, num_classes=21)
    g = torch.Generator().manual_seed(6)
    default_boxes = model.default_boxes(320)
    a = default_boxes.shape[0]
    cls, box = torch.randn(2, a, 21, generator=g) * 3, torch.randn(2, a, 4, generator=g)
    sizes = [(320, 320), (300, 250)]
    ref = model.postprocess(cls, box, sizes, input_size=320)
    out = postprocess_numpy(cls.numpy(), box.numpy(), default_boxes.numpy(), config, sizes)
    n = RECIPES[config].detections_per_img
    for r, o, (h, w) in zip(ref, out, sizes):
        assert len(r["labels"]) == len(o["labels"]) == n
        assert o["boxes"].min() >= 0 and o["boxes"][:, 0::2].max() <= w and o["boxes"][:, 1::2].max() <= h
        np.testing.assert_array_equal(o["labels"], r["labels"].numpy())
        np.testing.assert_allclose(o["boxes"], r["boxes"].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(o["scores"], r["scores"].numpy(), rtol=0, atol=1e-5)


def _tf_multiclass_nms(boxes, scores, size, recipe):
    """TF multiclass_non_max_suppression, literally: NMS class by class over every box above the threshold
    (max per class), sort, clip, drop zero-area boxes, keep the best."""
    out = []
    for c in range(scores.shape[1]):
        idx = torch.where(scores[:, c] > recipe.score_thresh)[0]
        keep = idx[nms(boxes[idx], scores[idx, c], recipe.nms_thresh)][:recipe.max_per_class]
        out += [(float(scores[i, c]), c + 1, i) for i in keep.tolist()]
    out.sort(key=lambda t: -t[0])
    sel = [(s, c, clip_boxes_to_image(boxes[i:i + 1], size)[0]) for s, c, i in out]
    sel = [t for t in sel if (t[2][2] - t[2][0]) * (t[2][3] - t[2][1]) > 0][:recipe.detections_per_img]
    return [t[1] for t in sel], torch.stack([t[2] for t in sel])


def test_paper_postprocess_is_tf_multiclass_nms():
    """The paper config's NMS over the best candidates (grown until enough survive) equals TF's NMS over every
    candidate: here all default boxes sit on a few places, so most candidates are suppressed and the
    candidate set must grow; some boxes lie outside the image and are dropped after clipping."""
    recipe = RECIPES["paper"]
    g = torch.Generator().manual_seed(7)
    a, k = 3000, 4
    places = torch.tensor([[10.0, 10.0, 60.0, 60.0], [100.0, 80.0, 200.0, 220.0], [330.0, 330.0, 400.0, 390.0]])
    default_boxes = places[torch.randint(0, 3, (a,), generator=g)]
    cls, box = torch.randn(1, a, k + 1, generator=g), torch.randn(1, a, 4, generator=g) * 0.5
    det = postprocess_detections(cls, box, default_boxes, recipe, (320, 320))[0]
    labels, boxes = _tf_multiclass_nms(decode_boxes(box[0], default_boxes), torch.sigmoid(cls[0, :, 1:]),
                                       (320, 320), recipe)
    assert 0 < len(labels) < recipe.detections_per_img  # the growing path ran to the end
    assert det["labels"].tolist() == labels
    torch.testing.assert_close(det["boxes"], boxes)
    out = postprocess_numpy(cls.numpy(), box.numpy(), default_boxes.numpy(), "paper", 320)[0]
    assert out["labels"].tolist() == labels


@pytest.mark.parametrize("config", ["paper", "torchvision"])
def test_every_parameter_gets_a_gradient(config):
    """With a ground-truth box on every map's default boxes (so each box predictor has positives), the loss
    reaches every parameter of backbone, extra layers and both heads."""
    model = _small("ssdlite_mobilenet_v3_small", config, num_classes=5).train()
    default_boxes = model.default_boxes(128)
    starts, start = [], 0
    for (h, w), n in zip(model.map_sizes(128), model.recipe.boxes_per_location):
        starts.append(start + (h * w * n) // 2)  # a box in the middle of each map's block
        start += h * w * n
    boxes = tv_tensors.BoundingBoxes(default_boxes[starts], format="XYXY", canvas_size=(128, 128))
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2, 3, 4, 1, 2])},
               {"boxes": boxes[:0], "labels": torch.zeros(0, dtype=torch.int64)}]
    cls, box = model(torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(8)))
    loss = multibox_loss(cls, box, targets, default_boxes, model)
    assert set(loss) == {"loss", "cls", "box"} and all(v.ndim == 0 for v in loss.values())
    loss["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    silent = [n for n, p in model.named_parameters() if n.endswith("weight") and p.grad.abs().sum() == 0]
    assert not silent


def test_initialisation():
    """paper: class bias -4.6 (prior 0.01, TF class_prediction_bias_init), N(0, 0.03) convs; torchvision: zero
    bias, N(0, 0.03) weights (ssdlite.py _normal_init); both BN momentum 0.03 (TF decay 0.97)."""
    paper = _small("ssdlite_mobilenet_v3_small", "paper")
    tvc = _small("ssdlite_mobilenet_v3_small", "torchvision")
    assert torch.all(paper.cls_head[0].conv_pw.bias == -4.6) and torch.all(paper.box_head[0].conv_pw.bias == 0)
    assert torch.all(tvc.cls_head[0].conv_pw.bias == 0)
    w = torch.cat([m.weight.detach().flatten() for m in tvc.modules() if isinstance(m, torch.nn.Conv2d)])
    assert 0.027 < float(w.std()) < 0.033
    assert all(m.momentum == 0.03 for m in paper.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_config_rebuilds_the_model():
    model = mobilenets.create_model("ssdlite_mobilenet_v3_small", config="torchvision", width=0.5, num_classes=11,
                                    image_size=(256, 320), tf_padding=True)
    cfg = model.config
    assert isinstance(cfg, DetectorConfig) and list(cfg.to_dict())[0] == "name"
    rebuilt = mobilenets.create_model(cfg.name, **{k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items()
                                                   if k != "name"})
    assert rebuilt.config == cfg
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        assert model.default_boxes().shape[0] == model.eval()(torch.zeros(1, 3, 256, 320))[0].shape[1]


def test_forward_exports():
    """forward is tensors in, tensors out with no data-dependent control flow: torch.export captures it."""
    model = _small("ssdlite_mobilenet_v3_small", "paper").eval()
    x = torch.randn(1, 3, 96, 96)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        for a, b in zip(exported.module()(x), model(x)):
            torch.testing.assert_close(a, b)


def test_loss_accepts_any_box_format():
    default_boxes = _small("ssdlite_mobilenet_v3_small", "paper").default_boxes(320)
    g = torch.Generator().manual_seed(9)
    cls, box = torch.randn(1, 2034, 4, generator=g), torch.randn(1, 2034, 4, generator=g)
    xyxy = _boxes(3, g)
    labels = torch.tensor([1, 2, 3])
    cxcywh = convert_bounding_box_format(xyxy, new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
    a = multibox_loss(cls, box, [{"boxes": xyxy, "labels": labels}], default_boxes, "paper")
    b = multibox_loss(cls, box, [{"boxes": cxcywh, "labels": labels}], default_boxes, "paper")
    torch.testing.assert_close(a["loss"], b["loss"])


def test_postprocess_checks_the_input_size():
    model = _small("ssdlite_mobilenet_v3_small", "paper")
    cls, box = torch.zeros(1, 2034, 91), torch.zeros(1, 2034, 4)
    assert len(model.postprocess(cls, box)) == 1  # the config's 320
    with pytest.raises(MobileNetsError, match="input_size"):
        model.postprocess(cls, box, [(256, 256)])


@pytest.mark.parametrize("bad", [dict(config="tf"), dict(num_classes=1), dict(dropout=0.2), dict(image_size=16),
                                 dict(width=0), dict(tf_padding="yes"), dict(reduced_tail="yes"),
                                 dict(image_size=(320, 320, 3)), dict(bn_eps=0)])
def test_bad_options(bad):
    with pytest.raises(MobileNetsError):
        mobilenets.create_model("ssdlite_mobilenet_v3_small", **bad)


def test_reduced_tail_only_for_v3():
    with pytest.raises(MobileNetsError, match="V3"):
        mobilenets.create_model("ssdlite_mobilenet_v2", reduced_tail=True)
    with pytest.raises(MobileNetsError, match="config"):
        multibox_loss(torch.zeros(1, 4, 3), torch.zeros(1, 4, 4), [{"boxes": torch.zeros(0, 4), "labels": []}],
                      torch.zeros(4, 4), "keras")
