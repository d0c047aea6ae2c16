"""``mobilenets detect``: boxes of an SSDLite checkpoint on image files, printed and drawn on the images."""

from __future__ import annotations

import argparse

from ..errors import one_line
from .common import float_range, format_table

__all__ = ["add_commands", "format_detection_eval"]


def _detect(args: argparse.Namespace) -> int:
    from ..detection.inference import detect

    results = detect(args.weights, args.images, score_threshold=args.score_threshold, device=args.device,
                     output_dir=args.output_dir)
    for r in results:
        print(one_line(r.image))
        for b in r.boxes:
            x1, y1, x2, y2 = b.box
            print(f"  {b.score:5.3f}  {one_line(b.name)}  ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})")
        if not r.boxes:
            print(f"  no boxes scoring >= {args.score_threshold:g}")
        print(f"  annotated: {one_line(r.annotated)}")
    return 0


def format_detection_eval(r) -> str:
    """A :class:`~mobilenets.detection.evaluate.DetectionEvalResult` as text: AP per class, then the summary
    APs and the files written (for ``mobilenets eval`` on a detection checkpoint)."""
    def ap(v: float) -> str:
        return "n/a" if v < 0 else f"{v:.3f}"  # pycocotools' -1: no ground truth there

    lines = [format_table(["class", "AP"], [[one_line(c), ap(v)] for c, v in r.per_class.items()]), "",
             (f"{r.count} images: AP {ap(r.ap)}  AP50 {ap(r.ap50)}  AP75 {ap(r.ap75)}  "
              f"AP small {ap(r.ap_small)}  medium {ap(r.ap_medium)}  large {ap(r.ap_large)}"),
             f"metrics: {one_line(r.metrics_json)}", f"picture: {one_line(r.png)}"]
    return "\n".join(lines)


def add_commands(sub) -> None:
    p = sub.add_parser("detect", help="detect objects in images with a detection checkpoint; write annotated PNGs",
                       description="Print each image's boxes (score, class, x1 y1 x2 y2 in the image's pixels) and "
                                   "write <image name>_detections.png with the boxes drawn into --output-dir.")
    p.add_argument("--weights", required=True, metavar="CKPT", help="a detection checkpoint (.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--score-threshold", type=float_range(0, 1), default=0.3,
                   help="keep boxes scoring at least this")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--output-dir", metavar="DIR", default=".", help="folder for the annotated PNGs")
    p.set_defaults(handler=_detect)
