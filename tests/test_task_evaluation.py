"""The tasks' evaluation sums (kept on the device while batches run, read once) against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mobilenets.segmentation.metrics import confusion_matrix, segmentation_metrics
from mobilenets.tasks.classification import ClassificationTask
from mobilenets.tasks.segmentation import SegmentationTask
from mobilenets.tasks.base import EvalContext
from mobilenets.training.config import TrainConfig

CPU = EvalContext(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


def _numpy_confusion(pred: np.ndarray, target: np.ndarray, k: int, ignore: int) -> np.ndarray:
    out = np.zeros((k, k), np.int64)
    keep = target != ignore
    np.add.at(out, (target[keep], pred[keep]), 1)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrix_counts_every_pixel_but_the_ignored(seed):
    g = torch.Generator().manual_seed(seed)
    k = 5
    logits = torch.randn(3, k, 9, 11, generator=g)
    target = torch.randint(0, k, (3, 9, 11), generator=g)
    target[torch.rand(3, 9, 11, generator=g) < 0.3] = 255
    expected = _numpy_confusion(logits.argmax(1).numpy(), target.numpy(), k, 255)
    assert torch.equal(confusion_matrix(logits, target, k), torch.from_numpy(expected))
    assert torch.equal(confusion_matrix(logits.argmax(1), target, k), torch.from_numpy(expected))  # class ids
    assert confusion_matrix(logits, torch.full_like(target, 255), k).sum() == 0


def test_classification_evaluation_equals_the_whole_set_at_once():
    torch.manual_seed(0)
    model = nn.Linear(8, 7)
    x, y = torch.randn(50, 8), torch.randint(0, 7, (50,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 16, 16, 16, 2: the sums must weigh by batch size
    m = ClassificationTask(TrainConfig()).evaluate(model, loader, CPU)
    with torch.no_grad():
        logits = model(x)
    top = logits.topk(5, dim=1).indices
    assert m["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert m["top1"] == pytest.approx(100 * (top[:, 0] == y).double().mean().item())
    assert m["top5"] == pytest.approx(100 * (top == y[:, None]).any(1).double().mean().item())


def test_segmentation_evaluation_equals_the_whole_set_at_once():
    torch.manual_seed(0)
    k = 4
    model = nn.Conv2d(3, k, 1)
    x, y = torch.randn(7, 3, 6, 5), torch.randint(0, k, (7, 6, 5))
    y[torch.rand(7, 6, 5) < 0.2] = 255
    task = SegmentationTask(TrainConfig(task="segmentation"))
    task.num_classes = k  # what build_model sets
    m = task.evaluate(model, DataLoader(TensorDataset(x, y), batch_size=3), CPU)
    with torch.no_grad():
        logits = model(x)
    confusion = torch.from_numpy(_numpy_confusion(logits.argmax(1).numpy(), y.numpy(), k, 255))
    direct = segmentation_metrics(confusion)
    # the loss averages each batch's pixel mean over images (batches of 3, 3, 1), as training reports it
    batch_means = [nn.functional.cross_entropy(logits[s], y[s], ignore_index=255).item() * n
                   for s, n in ((slice(0, 3), 3), (slice(3, 6), 3), (slice(6, 7), 1))]
    assert m["loss"] == pytest.approx(sum(batch_means) / 7, rel=1e-6)
    assert m["miou"] == pytest.approx(direct["miou"]) and m["pixel_acc"] == pytest.approx(direct["pixel_acc"])
    assert m["images"] == 7


def test_pixel_loss_is_the_mean_over_labelled_pixels_and_zero_without_any():
    """Segmentation's loss: torch's ignore-index mean where some pixel is labelled; 0 with a zero gradient for a
    batch of nothing but ignored pixels (torch's mean is NaN there, and the run stopped as diverged)."""
    from mobilenets.tasks.segmentation import IGNORE_INDEX, pixel_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=gen, requires_grad=True)
    y = torch.randint(0, 3, (2, 5, 5), generator=gen)
    y[0, :2] = IGNORE_INDEX
    torch.testing.assert_close(pixel_loss(logits, y),
                               torch.nn.functional.cross_entropy(logits, y, ignore_index=IGNORE_INDEX))
    loss = pixel_loss(logits, torch.full_like(y, IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
