"""The real published files in ../shared/data/pretrained (skipped when absent): each loads, predicts the
photos as PROVENANCE.md's reference predictions say, and the TFLite files agree with the LiteRT interpreter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilenets import inspect_weights, model_from_weights
from mobilenets.labels import imagenet_labels
from mobilenets.predict import load_image

H5 = "mobilenet_v1_0.25_224.h5"
V2_QUANT = "mobilenet_v2_1.0_224_quant.tflite"
V3_UINT8 = "mobilenet_v3_small_1.0_224.uint8.tflite"
CAT = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}


def resized(pretrained_dir, photo: str) -> np.ndarray:
    """PROVENANCE.md's "resize" preprocessing: the whole image resized bilinearly to 224x224, uint8 RGB."""
    from PIL import Image

    img = load_image(pretrained_dir / "photos" / photo).resize((224, 224), Image.BILINEAR)
    return np.asarray(img)


def our_probs(model, pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]  # [-1, 1]
    with torch.no_grad():
        return model(x).softmax(1)[0]


def top(probs, k: int) -> list[str]:
    labels = imagenet_labels()
    return [labels[i] for i in probs.topk(k).indices.tolist()]


@pytest.mark.parametrize("file, expected", [
    (H5, ("keras", "mobilenet_v1", 0.25, 1000, False)),
    (V2_QUANT, ("tflite", "mobilenet_v2", 1.0, 1001, True)),
    (V3_UINT8, ("tflite", "mobilenet_v3_small", 1.0, 1001, True)),
])
def test_published_files_load_and_predict(pretrained_dir, file, expected):
    info = inspect_weights(pretrained_dir / file)
    assert (info.format, info.model, info.width, info.file_classes, info.background) == expected
    model, report = model_from_weights(pretrained_dir / file)
    assert model.config.num_classes == 1000 and report.dropped_background == expected[-1]
    assert (model.config.tf_padding, model.config.bn_eps) == (True, 1e-3)
    model.eval()
    cat, bird, parrot = (our_probs(model, resized(pretrained_dir, p)) for p in ("cat.bmp", "bird.bmp", "parrot.jpg"))
    # PROVENANCE.md: the weak V1 0.25 splits the cat among three cat classes; all three models say
    # Egyptian cat with the resize preprocessing, chickadee and macaw.
    assert set(top(cat, 3)) == CAT
    assert top(cat, 1) == ["Egyptian cat"]
    assert top(bird, 1) == ["chickadee"]
    assert top(parrot, 1) == ["macaw"]


def test_h5_matches_reference_probabilities(pretrained_dir):
    """PROVENANCE.md's float NumPy reference for the h5: cat 0.411 Egyptian / 0.305 tabby / 0.282 tiger cat,
    bird 0.835 chickadee, parrot 0.940 macaw (resize preprocessing, printed to 3 decimals)."""
    model, _ = model_from_weights(pretrained_dir / H5)
    model.eval()
    labels = imagenet_labels()
    for photo, expected in [("cat.bmp", {"Egyptian cat": 0.411, "tabby, tabby cat": 0.305, "tiger cat": 0.282}),
                            ("bird.bmp", {"chickadee": 0.835}), ("parrot.jpg", {"macaw": 0.940})]:
        probs = our_probs(model, resized(pretrained_dir, photo))
        for label, p in expected.items():
            assert abs(probs[labels.index(label)].item() - p) < 2e-3, (photo, label)


@pytest.mark.parametrize("file", [V2_QUANT, V3_UINT8])
def test_tflite_agrees_with_litert_interpreter(pretrained_dir, file):
    """Our float model against LiteRT's integer inference, same pixels: the same top-1, and every class
    the interpreter gives >= 2% (5 steps of its 1/256 output quantum, above its rounding) in our top-5."""
    Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter
    model, _ = model_from_weights(pretrained_dir / file)
    model.eval()
    interp = Interpreter(model_path=str(pretrained_dir / file))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    for photo in ("cat.bmp", "bird.bmp", "parrot.jpg"):
        pixels = resized(pretrained_dir, photo)
        interp.set_tensor(inp["index"], pixels[None].astype(inp["dtype"]))
        interp.invoke()
        scale, zero = out["quantization"]
        lite = (interp.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale  # 1001 classes
        lite = torch.from_numpy(lite[1:])  # drop background, as our model does
        ours = our_probs(model, pixels)
        assert ours.argmax() == lite.argmax(), photo
        confident = set(torch.nonzero(lite >= 0.02).flatten().tolist())
        assert confident <= set(ours.topk(5).indices.tolist()), photo


def test_keep_background(pretrained_dir):
    full, report = model_from_weights(pretrained_dir / V3_UINT8, keep_background=True)
    dropped, _ = model_from_weights(pretrained_dir / V3_UINT8)
    assert full.config.num_classes == 1001 and not report.dropped_background
    assert report.info.names_for(1001, keep_background=True)[0] == "background"
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(full.eval()(x)[:, 1:], dropped.eval()(x), atol=1e-5)
