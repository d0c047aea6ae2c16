"""``mobilenets inspect``, ``convert`` and ``predict``: weights from any ecosystem."""

from __future__ import annotations

import argparse
import sys

from ..errors import one_line
from .common import add_refresh, add_weights_options, describe, int_range, output_path


def _inspect(args: argparse.Namespace) -> int:
    from ..weights import inspect_weights

    info = inspect_weights(args.weights, name=args.model, width=args.width, tf=args.tf, refresh=args.refresh)
    print(f"{args.weights}: {describe(info)}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..weights import convert_weights

    report = convert_weights(args.src, args.dst, name=args.model, width=args.width,
                             keep_background=args.keep_background, tf=args.tf, refresh=args.refresh)
    print(f"{args.src}: {describe(report.info)}")
    print(f"wrote {args.dst}: {len(report.loaded)} tensors" +
          (", background logit dropped" if report.dropped_background else ""))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ..predict import predict

    results = predict(args.weights, args.images, top=args.top, name=args.model, width=args.width, tf=args.tf,
                      keep_background=args.keep_background, refresh=args.refresh, strict=False)
    for r in results:
        if r.error is not None:  # reported in place, on stderr; the other images go on
            sys.stdout.flush()
            print(f"mobilenets predict: error: {one_line(r.error)}", file=sys.stderr, flush=True)
            continue
        print(one_line(r.image))
        for label, p in r.top:
            print(f"  {p:6.3f}  {one_line(label)}")
    return 1 if any(r.error is not None for r in results) else 0


def add_commands(sub) -> None:
    p = sub.add_parser("inspect", help="what a weights file holds: format, architecture, width, classes, options")
    p.add_argument("weights", help="a weights file or http(s) URL")
    add_weights_options(p)
    add_refresh(p)
    p.set_defaults(handler=_inspect)

    p = sub.add_parser("convert", help="write any supported weights file as a mobilenets checkpoint")
    p.add_argument("src", help="weights file or http(s) URL: .safetensors, .pth/.pt (torchvision, timm, "
                               "mobilenets), Keras .h5, .tflite")
    p.add_argument("dst", type=output_path("checkpoint"), help="the mobilenets checkpoint to write (.safetensors)")
    add_weights_options(p)
    add_refresh(p)
    p.add_argument("--keep-background", action="store_true", help="keep TF's 1001st (background) class")
    p.set_defaults(handler=_convert)

    p = sub.add_parser("predict", help="top-5 ImageNet (or checkpoint) labels of images",
                       description="Print each image's most probable classes. An image that cannot be read is "
                                   "reported on stderr and the others are still classified. Exit status: 0 when "
                                   "every image was classified, 1 when some could not be read, 2 for a usage or "
                                   "weights error.")
    p.add_argument("--weights", required=True, help="weights file or http(s) URL, any supported format")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_weights_options(p)
    add_refresh(p)
    p.add_argument("--top", type=int_range(1, 100_000), default=5, help="how many classes to print per image")
    p.add_argument("--keep-background", action="store_true", help="keep TF's 1001st (background) class")
    p.set_defaults(handler=_predict)
