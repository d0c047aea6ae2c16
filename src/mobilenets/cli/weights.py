"""``mobilenets weights``, ``inspect``, ``convert`` and ``predict``: weights from any ecosystem."""

from __future__ import annotations

import argparse
import sys

from ..errors import one_line
from .common import add_refresh, add_weights_options, describe, float_range, format_table, int_range, model_name, \
    output_path


def _published(entry) -> str:
    if entry.top1 is None:
        return "-"
    metric = {"top-1": "top-1", "COCO box mAP": "box mAP", "VOC-label mIoU": "mIoU"}.get(entry.metric, entry.metric)
    return f"{entry.top1:g} {metric}"


def _weights(args: argparse.Namespace) -> int:
    from ..weights import download_weights, hub

    if args.download:
        entry, path = download_weights(args.download, model=args.model, width=args.width, refresh=args.refresh)
        print(f"{entry.name}: {path}")
        return 0
    model, width = args.model, args.width
    if model is not None:
        from ..registry import resolve_alias

        model, width, _, _ = resolve_alias(model, width)
    rows = []
    for entry in hub.published_for(model, width, source=args.source):
        available = hub.is_available(entry)
        default = available and entry.width is not None and entry is hub.default_weights(entry.model, entry.width)
        status = "cached" if hub.is_cached(entry) else "-" if available else "no model"
        rows.append([entry.name, entry.model, "-" if entry.width is None else f"{entry.width:g}",
                     _published(entry), "*" if default else "", status])
    if not rows:
        print("no published weights match")
        return 0
    print(format_table(["weights", "model", "width", "published", "default", "cache"], rows, align="lllrll"))
    print("default: what pretrained=True loads; no model: listed for reference, its model is not in this version")
    return 0


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
    from .inference import inference_options

    results = predict(args.weights, args.images, top=args.top, name=args.model, width=args.width, tf=args.tf,
                      keep_background=args.keep_background, refresh=args.refresh, strict=False,
                      device=args.device, inference=inference_options(args))
    for r in results:
        if r.error is not None:  # reported in place, on stderr; the other images go on
            sys.stdout.flush()
            print(f"mobilenets predict: error: {one_line(r.error)}", file=sys.stderr, flush=True)
            continue
        print(one_line(r.image))
        for label, p in r.top:
            print(f"  {p:6.3f}  {one_line(label)}")
    return 1 if any(r.error is not None for r in results) else 0


# hub.SOURCES, spelt out so that building the parser (--help) imports nothing heavy; a test keeps them equal
SOURCES = ("torchvision", "timm", "keras", "tflite")


def add_commands(sub) -> None:
    p = sub.add_parser("weights", help="the published weight files (torchvision, timm, Keras, TFLite) by name: "
                                       "list them, or --download one into the cache",
                       description="Published MobileNet weights by name, with their published accuracy. Any "
                                   "name listed works as --weights / weights= (downloaded once, hash-checked, "
                                   "cached); so do 'torchvision', 'timm', 'keras', 'tflite' and torchvision's "
                                   "enum names (IMAGENET1K_V1) together with a model.")
    p.add_argument("--model", type=model_name(None), metavar="NAME",
                   help="only this model (ours, or a timm / torchvision name such as mobilenetv3_large_100)")
    p.add_argument("--width", type=float_range(0, 4, lo_open=True), help="only this width")
    p.add_argument("--source", choices=SOURCES, help="only this publisher")
    p.add_argument("--download", metavar="WEIGHTS",
                   help="fetch these weights into the cache and print where they are (a listed name; "
                        "'torchvision', 'timm', 'IMAGENET1K_V1', ... need --model)")
    add_refresh(p)
    p.set_defaults(handler=_weights)

    p = sub.add_parser("inspect", help="what a weights file holds: format, architecture, width, classes, options")
    p.add_argument("weights", help="a weights file, an http(s) URL or a published name ('mobilenets weights')")
    add_weights_options(p)
    add_refresh(p)
    p.set_defaults(handler=_inspect)

    p = sub.add_parser("convert", help="write any supported weights file as a mobilenets checkpoint")
    p.add_argument("src", help="weights file or http(s) URL: .safetensors, .pth/.pt (torchvision, timm, "
                               "mobilenets), Keras .h5, .tflite; or a published name ('mobilenets weights')")
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
    p.add_argument("--weights", required=True, help="weights file or http(s) URL, any supported format, or a "
                                                    "published name ('mobilenets weights')")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_weights_options(p)
    add_refresh(p)
    p.add_argument("--top", type=int_range(1, 100_000), default=5, help="how many classes to print per image")
    p.add_argument("--keep-background", action="store_true", help="keep TF's 1001st (background) class")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, auto")
    from .inference import add_inference_args

    add_inference_args(p)
    p.set_defaults(handler=_predict)
