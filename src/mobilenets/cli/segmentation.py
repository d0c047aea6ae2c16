"""``mobilenets segment``: class maps of a segmentation checkpoint on image files, with overlay PNGs."""

from __future__ import annotations

import argparse
import math

from ..errors import one_line
from .common import format_table

__all__ = ["add_commands", "format_segmentation_eval"]


def _segment(args: argparse.Namespace) -> int:
    from ..segmentation.inference import segment

    results = segment(args.weights, args.images, device=args.device, output_dir=args.output_dir)
    for r in results:
        print(one_line(r.image))
        table = format_table(["class", "pixels %"], [[one_line(c), f"{100 * s:.2f}"] for c, s in r.shares.items()])
        print("\n".join("  " + line for line in table.splitlines()))
        print(f"  classes: {one_line(r.classes_png)}")
        print(f"  overlay: {one_line(r.overlay_png)}")
    return 0


def format_segmentation_eval(r) -> str:
    """A :class:`~mobilenets.segmentation.evaluate.SegmentationEvalResult` as text: IoU and pixel count per
    class, then mIoU, pixel accuracy and the files written (for ``mobilenets eval`` on a segmentation
    checkpoint)."""
    rows = [[one_line(c), int(r.confusion[i].sum()), "n/a" if math.isnan(r.iou[c]) else f"{100 * r.iou[c]:.2f}"]
            for i, c in enumerate(r.class_names)]
    return "\n".join([format_table(["class", "pixels", "IoU %"], rows), "",
                      f"{r.count} images: mIoU {100 * r.miou:.2f}%  pixel accuracy {100 * r.pixel_acc:.2f}%",
                      f"metrics: {one_line(r.metrics_json)}", f"confusion matrix: {one_line(r.confusion_png)}",
                      f"picture: {one_line(r.png)}"])


def add_commands(sub) -> None:
    p = sub.add_parser("segment", help="segment images with a segmentation checkpoint; write class and overlay PNGs",
                       description="Print each image's class pixel shares and write <image name>_classes.png "
                                   "(palette PNG, pixel value = class id) and <image name>_overlay.png into "
                                   "--output-dir.")
    p.add_argument("--weights", required=True, metavar="CKPT", help="a segmentation checkpoint (.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--output-dir", metavar="DIR", default=".", help="folder for the PNGs")
    p.set_defaults(handler=_segment)
