"""Detection: COCO / VOC / the built-in shapes set, SSDLite's multibox loss, COCO AP with pycocotools."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import MobileNetsError
from ..preprocess import TF_INCEPTION
from .base import EvalContext, Task, TaskData, all_reduce_sum, load_backbone_weights, pretrained_info, running_sums

__all__ = ["DetectionTask"]


class DetectionTask(Task):
    name = "detection"
    default_preprocessing = TF_INCEPTION
    best_metric = "ap"  # COCO AP (IoU .50:.95), the primary COCO metric
    curve_panels = (("loss", ("loss",)), ("COCO AP", ("ap", "ap50")))

    def _backbone_name(self) -> str:
        from ..detection.ssdlite import BACKBONES

        return BACKBONES[self.config.model].model

    def pretrained(self):
        c = self.config
        if c.weights and c.reduced_tail:
            raise MobileNetsError(f"{c.weights}: classification weights do not fit the reduced tail (its last stage "
                                  "has half the channels); drop --reduced-tail to initialise from them")
        return pretrained_info(c.weights, self._backbone_name(), c.width)

    def build_data(self, pre) -> TaskData:
        from ..detection.data import detection_collate, load_detection_dataset

        c = self.config
        common = dict(image_size=c.resolution, mean=pre.mean, std=pre.std, strict=c.strict)
        train = load_detection_dataset(c.data, "train", train=True, augment=c.augment, num_samples=c.samples, **common)
        val = load_detection_dataset(c.data, "val", train=False, **common)
        if list(val.classes) != list(train.classes):
            raise MobileNetsError(f"{c.data}: the val split's classes differ from the train split's")
        return TaskData(list(train.classes), train, val, detection_collate,
                        description=c.data or "shapes over photos (built-in)")

    def build_model(self, num_classes: int, info) -> nn.Module:
        from ..factory import create_model

        c = self.config
        options = {"tf_padding": info.tf_padding, "bn_eps": info.bn_eps} if info else {}
        model = create_model(c.model, width=c.width, num_classes=num_classes + 1, config=c.head,
                             reduced_tail=c.reduced_tail, image_size=c.resolution, **options)
        self.default_boxes = model.default_boxes(c.resolution).cpu()
        self.recipe = model.recipe
        return model

    def load_pretrained(self, model: nn.Module, info) -> None:
        load_backbone_weights(model.backbone, self.config.weights)

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.extras, model.cls_head, model.box_head]

    def targets_to(self, targets, device: torch.device):
        # the labels stay on the CPU: the loss checks them there for free, then moves them (no host sync on a GPU)
        return [{"boxes": t["boxes"].to(device, non_blocking=True), "labels": t["labels"]} for t in targets]

    def _loss(self, outputs, targets) -> dict[str, torch.Tensor]:
        from ..detection.loss import multibox_loss

        cls_logits, box_regression = outputs
        if self.default_boxes.device != box_regression.device:  # moved once, not copied every step
            self.default_boxes = self.default_boxes.to(box_regression.device)
        boxes = self.default_boxes
        return multibox_loss(cls_logits.float(), box_regression.float(), targets, boxes, self.recipe)

    def loss(self, outputs, targets):
        parts = self._loss(outputs, targets)
        n = len(targets)
        return parts["loss"], {"loss": parts["loss"].detach() * n, "cls": parts["cls"].detach() * n,
                               "box": parts["box"].detach() * n, "count": n}

    def train_summary(self, sums):
        n = max(sums["count"], 1.0)
        return {"loss": sums["loss"] / n, "cls_loss": sums["cls"] / n, "box_loss": sums["box"] / n}

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, loader, ctx: EvalContext) -> dict[str, float]:
        """Val loss and COCO AP: every rank detects on its shard, rank 0 runs pycocotools on them all."""
        from ..detection.metrics import METRIC_NAMES, coco_metrics, to_coco_results
        from ..training.distributed import gather_objects

        model.eval()
        results, sums = [], running_sums(2, ctx)  # loss x images, images
        size = self.config.resolution
        for x, targets in loader:
            x = ctx.inputs(x)
            with ctx.autocast():
                outputs = model(x)
            outputs = tuple(o.float() for o in outputs)
            on_device = self.targets_to(targets, ctx.device)
            loss = self._loss(outputs, on_device)["loss"]
            sums[0] += loss.to(sums.dtype) * len(targets)
            sums[1] += len(targets)  # a number into a kernel; a tensor made from it would be a blocking copy
            detections = model.postprocess(*outputs, input_size=size)
            for t, d in zip(targets, detections):
                results += to_coco_results(t["image_id"], {k: v.cpu() for k, v in d.items()})
        sums = all_reduce_sum(sums, ctx)
        everything = [r for part in gather_objects(results, ctx.world) for r in part]
        if ctx.rank == 0:
            if getattr(self, "_ground_truth", None) is None:  # the same every epoch: computed once
                self._ground_truth = _full_dataset(loader).coco_ground_truth()
            metrics = coco_metrics(self._ground_truth, everything)
        else:
            metrics = None
        metrics = gather_objects(metrics, ctx.world)[0]
        out = {"loss": sums[0].item() / max(sums[1].item(), 1.0)}
        out.update({k: metrics[k] for k in METRIC_NAMES})
        out["images"] = int(sums[1].item())  # over every rank's shard: the whole val set
        return out

    def message(self, row: dict) -> str:
        ema = f" | EMA AP {row['ema_val_ap']:.3f} AP50 {row['ema_val_ap50']:.3f}" if "ema_val_ap" in row else ""
        return (f"train loss {row['train_loss']:.4f} (cls {row['train_cls_loss']:.4f} box {row['train_box_loss']:.4f})"
                f" | val loss {row['val_loss']:.4f} AP {row['val_ap']:.3f} AP50 {row['val_ap50']:.3f} "
                f"AP75 {row['val_ap75']:.3f}{ema}")


def _full_dataset(loader):
    """The whole val set behind a rank's shard (a Subset): the ground truth covers every rank's images."""
    ds = loader.dataset
    return ds.dataset if isinstance(ds, torch.utils.data.Subset) else ds
