"""Segmentation: VOC / image-mask folders / the built-in shapes set, cross-entropy with an ignore index, mIoU."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MobileNetsError
from ..preprocess import TF_INCEPTION
from .base import EvalContext, Task, TaskData, all_reduce_sum, load_backbone_weights, pretrained_info, running_sums

__all__ = ["SegmentationTask", "IGNORE_INDEX"]

IGNORE_INDEX = 255  # VOC's border / "void" label


def pixel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled pixels (``IGNORE_INDEX`` left out), and 0 with a zero gradient
    for a batch without any: a crop of nothing but ignored pixels, where torch's mean is 0 / 0 = NaN and the run
    would stop as diverged. Computed on the device (no host sync)."""
    total = nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


class SegmentationTask(Task):
    name = "segmentation"
    default_preprocessing = TF_INCEPTION
    best_metric = "miou"
    curve_panels = (("loss", ("loss",)), ("mIoU", ("miou",)), ("pixel accuracy", ("pixel_acc",)))

    def _backbone_name(self) -> str:
        return self.config.model.split("_", 1)[1]  # lraspp_mobilenet_v3_large -> mobilenet_v3_large

    def pretrained(self):
        return pretrained_info(self.config.weights, self._backbone_name(), self.config.width)

    def build_data(self, pre) -> TaskData:
        from ..segmentation.data import load_segmentation_dataset

        c = self.config
        common = dict(image_size=c.resolution, mean=pre.mean, std=pre.std, strict=c.strict)
        train = load_segmentation_dataset(c.data, "train", train=True, augment=c.augment, num_samples=c.samples, **common)
        val = load_segmentation_dataset(c.data, "val", train=False, **common)
        if list(val.classes) != list(train.classes):
            raise MobileNetsError(f"{c.data}: the val split's classes differ from the train split's")
        return TaskData(list(train.classes), train, val, description=c.data or "shapes over photos (built-in)")

    def build_model(self, num_classes: int, info) -> nn.Module:
        from ..factory import create_model

        c = self.config
        options = {"tf_padding": info.tf_padding, "bn_eps": info.bn_eps} if info else {}
        if c.model.startswith("lraspp_"):
            options["config"] = c.head
        self.num_classes = num_classes
        return create_model(c.model, width=c.width, num_classes=num_classes, **options)

    def load_pretrained(self, model: nn.Module, info) -> None:
        if model.backbone.config.tail != "full":
            raise MobileNetsError(f"{self.config.weights}: classification weights do not fit {self.config.model}'s "
                                  f"'{self.config.head}' backbone (its last stage is halved, TF DeepLab's "
                                  "segmentation backbone); use --head torchvision to start from them")
        load_backbone_weights(model.backbone, self.config.weights)

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in (model.head, getattr(model, "classifier", None)) if m is not None]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor):
        loss = pixel_loss(outputs.float(), targets)
        n = len(targets)
        return loss, {"loss": loss.detach() * n, "count": n}

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        """Val loss, mIoU and pixel accuracy from a confusion matrix summed over the ranks."""
        from ..segmentation.metrics import confusion_matrix, segmentation_metrics

        model.eval()
        k = self.num_classes
        confusion = torch.zeros(k, k, dtype=torch.int64, device=ctx.device)
        sums = running_sums(2, ctx)  # loss x images, images
        for x, y in loader:
            x, y = ctx.inputs(x), y.to(ctx.device, non_blocking=True)
            with ctx.autocast():
                logits = model(x)
            logits = logits.float()
            loss = pixel_loss(logits, y)
            sums[0] += loss.to(sums.dtype) * len(y)
            sums[1] += len(y)  # a number into a kernel; a tensor made from it would be a blocking copy (a sync)
            confusion += confusion_matrix(logits, y, k, ignore_index=IGNORE_INDEX)
        confusion = all_reduce_sum(confusion, ctx)
        sums = all_reduce_sum(sums, ctx)
        m = segmentation_metrics(confusion)
        return {"loss": sums[0].item() / max(sums[1].item(), 1.0), "miou": m["miou"], "pixel_acc": m["pixel_acc"],
                "images": int(sums[1].item())}  # over every rank's shard: the whole val set

    def message(self, row: dict) -> str:
        ema = f" | EMA mIoU {row['ema_val_miou']:.3f}" if "ema_val_miou" in row else ""
        return (f"train loss {row['train_loss']:.4f} | val loss {row['val_loss']:.4f} mIoU {row['val_miou']:.3f} "
                f"pixel acc {row['val_pixel_acc']:.3f}{ema}")
