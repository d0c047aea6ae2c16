"""Classification: image folders or the built-in digits, cross-entropy with label smoothing, top-1 / top-5."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ..preprocess import IMAGENET
from .base import EvalContext, Task, TaskData, all_reduce_sum, pretrained_info, running_sums

__all__ = ["ClassificationTask"]

log = logging.getLogger("mobilenets")


class ClassificationTask(Task):
    name = "classification"
    default_preprocessing = IMAGENET
    best_metric = "top1"
    curve_panels = (("loss", ("loss",)), ("top-1 (%)", ("top1",)))

    def __init__(self, config) -> None:
        super().__init__(config)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def pretrained(self):
        return pretrained_info(self.config.weights, self.config.model, self.config.width)

    def build_data(self, pre) -> TaskData:
        from ..data import ImageFiles, load_image_folders, train_transform

        c = self.config
        tt = train_transform(c.resolution, mean=pre.mean, std=pre.std, crop_scale=c.crop_scale, hflip=c.flip_p,
                             augment=c.augment)
        if c.data is None:
            from ..digits import DIGITS_CLASSES, DigitsDataset

            return TaskData(list(DIGITS_CLASSES), DigitsDataset("train", image_size=c.resolution, transform=tt),
                            DigitsDataset("val", image_size=pre.resize, transform=pre.transform()),
                            description="digits (built-in)")
        splits = load_image_folders(c.data, val_split=c.val_split, strict=c.strict)
        return TaskData(splits.classes, ImageFiles(splits.train, splits.classes, transform=tt, strict=c.strict),
                        ImageFiles(splits.val, splits.classes, transform=pre.transform(), strict=c.strict),
                        description=c.data)

    def build_model(self, num_classes: int, info) -> nn.Module:
        from ..factory import create_model

        # what the weights were trained with: TF padding and BN eps (Keras / TFLite), a fixed stem (timm *_050)
        options = {"tf_padding": info.tf_padding, "bn_eps": info.bn_eps, "fixed_stem": info.fixed_stem} if info else {}
        if self.config.drop_path_rate:  # V4 only: the model refuses it for V1-V3 in one line
            options["drop_path_rate"] = self.config.drop_path_rate
        return create_model(self.config.model, width=self.config.width, num_classes=num_classes,
                            dropout=self.config.dropout, **options)

    def load_pretrained(self, model: nn.Module, info) -> None:
        """Fine-tuning weights into ``model``; a classifier of another class count is re-initialised."""
        from ..weights import load_weights

        with warnings.catch_warnings():  # the classifier note goes to the log instead
            warnings.simplefilter("ignore", UserWarning)
            report = load_weights(model, self.config.weights)
        log.info("fine-tuning from %s (%s weights): %d tensors loaded%s", self.config.weights, report.info.format,
                 len(report.loaded),
                 f", new classifier for {model.config.num_classes} classes" if report.reinitialized else "")

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in (getattr(model, "head_conv", None), getattr(model, "head_bn", None), model.classifier,
                            model.dropout) if m is not None]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor):
        logits = outputs.float()
        loss = self.criterion(logits, targets)
        n = len(targets)
        return loss, {"loss": loss.detach() * n, "hits": (logits.argmax(1) == targets).sum(), "count": n}

    def train_summary(self, sums):
        n = max(sums["count"], 1.0)
        return {"loss": sums["loss"] / n, "top1": 100 * sums["hits"] / n}

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        """Loss, top-1 and top-5 (%) over the loader (each rank holds a shard; sums are all-reduced)."""
        model.eval()
        sums = running_sums(4, ctx)  # loss sum, top-1 hits, top-5 hits, count
        for x, y in loader:
            x, y = ctx.inputs(x), y.to(ctx.device, non_blocking=True)
            with ctx.autocast():
                logits = model(x)
            logits = logits.float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            sums[:3] += torch.stack([nn.functional.cross_entropy(logits, y, reduction="sum"), (top[:, 0] == y).sum(),
                                     (top == y[:, None]).any(1).sum()]).to(sums.dtype)
            sums[3] += len(y)  # a number into a kernel; a tensor made from it would be a blocking copy (a sync)
        sums = all_reduce_sum(sums, ctx)
        n = max(sums[3].item(), 1.0)
        return {"loss": sums[0].item() / n, "top1": 100 * sums[1].item() / n, "top5": 100 * sums[2].item() / n}

    def message(self, row: dict) -> str:
        ema = f" | EMA top-1 {row['ema_val_top1']:.2f}%" if "ema_val_top1" in row else ""
        return (f"train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.2f}% | val loss {row['val_loss']:.4f} "
                f"top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%{ema}")
