"""The ``mobilenets`` command: a thin layer over the library, one library call per subcommand.

Every subcommand turns its arguments into plain values (or a config dataclass) and calls one function; user
errors (:class:`~mobilenets.errors.MobileNetsError`, missing files) become a one-line message and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from .errors import MobileNetsError

__all__ = ["main", "format_table"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    """Register a subcommand handler (its parser is built in :func:`build_parser`)."""

    def deco(fn):
        _COMMANDS[name] = fn
        return fn

    return deco


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain-text table; ``align`` has one 'l' or 'r' per column (default: first left, rest right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, cells)])


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "OFF")


@command("models")
def _models(args: argparse.Namespace) -> int:
    from .catalog import model_catalog

    rows = model_catalog(args.model)
    table = []
    for r in rows:
        p = r.published
        table.append([
            r.model, f"{r.width:g}", r.resolution,
            f"{r.params / 1e6:.3f}", "" if p is None else f"{p.params_m:g}", _mark(r.params_ok),
            f"{r.madds / 1e6:.1f}", "" if p is None else f"{p.madds_m:g}", "*" if p and p.madds_note else _mark(r.madds_ok),
            "" if p is None else f"{p.top1:g}",
        ])
    print(format_table(
        ["model", "width", "res", "params(M)", "paper", "", "MAdds(M)", "paper", "", "top-1"], table,
        "lrrrrlrrlr",
    ))
    print("\nparams: 1000 classes, batch norm included; MAdds: conv and FC multiply-adds only (the papers' count).")
    print("ok: within 1.5% (or 0.6M) MAdds and 3.5% (or equal as printed) params of the paper.")
    for r in rows:
        if r.published and r.published.madds_note:
            print(f"* {r.model} {r.width:g}/{r.resolution}: {r.published.madds_note}")
    return 0


@command("profile")
def _profile(args: argparse.Namespace) -> int:
    from .factory import create_model
    from .profile import profile

    model = create_model(args.model, width=args.width, num_classes=args.num_classes)
    prof = profile(model, args.resolution)
    if not args.summary:
        print(format_table(
            ["layer", "type", "output", "params", "MAdds"],
            [[r.name, r.op_type, "x".join(map(str, r.out_shape)), f"{r.params:,}", f"{r.madds:,}"]
             for r in prof.layers],
            "llrrr",
        ))
        print()
    print(f"{args.model} width {args.width:g} at {args.resolution}x{args.resolution}: "
          f"{prof.params:,} params ({prof.layer_params:,} in conv/FC layers), {prof.madds:,} MAdds "
          f"({prof.madds / 1e6:.1f}M)\n")
    print(format_table(
        ["type", "MAdds", "% MAdds", "params", "% params"],
        [[t, f"{m:,}", f"{100 * m / prof.madds:.2f}", f"{p:,}", f"{100 * p / prof.layer_params:.2f}"]
         for t, (m, p) in prof.by_type().items()],
    ))
    return 0


def _describe(info) -> str:
    pre = "[-1, 1]" if info.preprocessing.mean == (0.5, 0.5, 0.5) else "ImageNet mean/std"
    classes = f"{info.file_classes} classes" + (" (index 0 = background)" if info.background else "")
    return (f"{info.format} weights: {info.model} width {info.width:g}, {classes}, tf_padding={info.tf_padding}, "
            f"bn_eps={info.bn_eps:g}, inputs {pre}, {info.preprocessing.crop}x{info.preprocessing.crop}")


@command("inspect")
def _inspect(args: argparse.Namespace) -> int:
    from .weights import inspect_weights

    info = inspect_weights(args.weights, name=args.model, width=args.width, tf=args.tf)
    print(f"{args.weights}: {_describe(info)}")
    return 0


@command("convert")
def _convert(args: argparse.Namespace) -> int:
    from .weights import convert_weights

    report = convert_weights(args.src, args.dst, name=args.model, width=args.width,
                             keep_background=args.keep_background, tf=args.tf)
    print(f"{args.src}: {_describe(report.info)}")
    print(f"wrote {args.dst}: {len(report.loaded)} tensors" +
          (", background logit dropped" if report.dropped_background else ""))
    return 0


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from .predict import predict

    results = predict(args.weights, args.images, top=args.top, name=args.model, width=args.width, tf=args.tf,
                      keep_background=args.keep_background)
    for r in results:
        print(r.image)
        for label, p in r.top:
            print(f"  {p:6.3f}  {label}")
    return 0


def _add_weights_options(p: argparse.ArgumentParser) -> None:
    from .registry import list_models

    p.add_argument("--model", choices=list_models(), help="the architecture (default: inferred from the file)")
    p.add_argument("--width", type=float, help="the width multiplier (default: inferred from the file)")
    p.add_argument("--tf", action="store_true", default=None,
                   help="the weights were trained in TensorFlow (timm tf_* files): TF padding, BN eps 1e-3, "
                        "[-1, 1] inputs; automatic for Keras and TFLite files")


@command("export")
def _export(args: argparse.Namespace) -> int:
    from .export import export_model

    report = export_model(
        args.weights, args.output, format=args.format, int8=args.int8, calib=args.calib, eval_data=args.eval,
        input_size=args.input_size, dynamic_batch=not args.static_batch, num_threads=args.threads,
    )
    print(report.summary())
    return 0


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    from .export.bench import BenchConfig, run_benchmark

    run_benchmark(BenchConfig(
        models=tuple(args.model or BenchConfig.models), resolution=args.resolution, threads=args.threads,
        quick=args.quick, out_dir=args.out_dir, skip=tuple(args.skip or ()),
    ))
    return 0


def _setup_logging() -> None:
    import logging

    log = logging.getLogger("mobilenets")
    if not log.handlers:
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


@command("train")
def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .train import TrainConfig, train

    _setup_logging()
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
    train(config)  # logs its progress and, at the end, the best checkpoint (rank 0 only under torchrun)
    return 0


@command("eval")
def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    r = evaluate(args.weights, data=args.data, batch_size=args.batch_size, workers=args.workers, device=args.device,
                 confusion_png=args.confusion_png, strict=args.strict)
    print(format_table(["class", "images", "top-1 %"],
                       [[c, int(r.confusion[i].sum()), f"{r.per_class[c]:.2f}"]
                        for i, c in enumerate(r.class_names) if c in r.per_class]))
    print(f"\n{r.count} images: top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}%")
    print(f"confusion matrix: {r.confusion_png}")
    return 0


def _add_train_parser(sub) -> None:
    from .registry import list_models
    from .train import AMP_MODES, AUGMENTS, OPTIMIZERS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train or fine-tune a model (built-in digits by default; torchrun for DDP)",
                       description="Train or fine-tune. With no arguments: mobilenet_v3_small on the built-in "
                                   "digits. Under torchrun: DistributedDataParallel.")
    p.add_argument("--data", metavar="DIR", help="ImageFolder root: DIR/train/<class>/*, DIR/val/<class>/* "
                                                 "(or class folders with --val-split); default: built-in digits")
    p.add_argument("--val-split", type=float, default=d.val_split, metavar="F",
                   help="hold out this fraction of each class of a single class folder")
    p.add_argument("--model", choices=list_models(), default=d.model)
    p.add_argument("--width", type=float, default=d.width)
    p.add_argument("--resolution", type=int, default=d.resolution)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (split over processes)")
    p.add_argument("--lr", type=float, default=d.lr, help="default: 4e-3 adamw, 0.1 sgd, 0.016 rmsprop, x batch/64")
    p.add_argument("--opt", choices=OPTIMIZERS, default=d.opt)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="default 0.05 adamw, 4e-5 otherwise; never on norm weights and biases")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay, help="EMA of weights per step (0: off)")
    p.add_argument("--augment", choices=AUGMENTS, default=d.augment)
    p.add_argument("--crop-scale", type=float, nargs=2, default=d.crop_scale, metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area range")
    p.add_argument("--hflip", type=float, default=d.hflip, help="flip probability (default 0.5; 0 for digits)")
    p.add_argument("--crop-pct", type=float, default=d.crop_pct, help="eval centre crop (default 0.875; 1 digits)")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--amp", choices=AMP_MODES, default=d.amp,
                   help="mixed precision autocast (auto: bf16/fp16 on GPU, none on CPU where it is slower)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers per process")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch threads (default: torch's; 1 for the built-in digits, fastest there)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun (GPU)")
    p.add_argument("--weights", metavar="FILE", help="fine-tune from these weights (new classifier)")
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error, not a skip")
    p.add_argument("--output", metavar="DIR", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder (its saved config is used)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .registry import list_models

    parser = argparse.ArgumentParser(prog="mobilenets", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="every registered model with params and MAdds beside the papers' figures")
    p.add_argument("--model", action="append", choices=list_models(), help="only this model (repeatable)")

    p = sub.add_parser("profile", help="per-layer params and MAdds, and the per-operator-type breakdown")
    p.add_argument("model", choices=list_models())
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--summary", action="store_true", help="only the totals and the per-type breakdown")

    p = sub.add_parser("inspect", help="what a weights file holds: format, architecture, width, classes, options")
    p.add_argument("weights", help="a weights file or http(s) URL")
    _add_weights_options(p)

    p = sub.add_parser("convert", help="write any supported weights file as a mobilenets checkpoint")
    p.add_argument("src", help="weights file or http(s) URL: .safetensors, .pth/.pt (torchvision, timm, "
                               "mobilenets), Keras .h5, .tflite")
    p.add_argument("dst", help="the mobilenets checkpoint to write (.safetensors)")
    _add_weights_options(p)
    p.add_argument("--keep-background", action="store_true", help="keep TF's 1001st (background) class")

    p = sub.add_parser("predict", help="top-5 ImageNet (or checkpoint) labels of images")
    p.add_argument("--weights", required=True, help="weights file or http(s) URL, any supported format")
    p.add_argument("images", nargs="+", help="image files")
    _add_weights_options(p)
    p.add_argument("--top", type=int, default=5, help="how many classes to print per image")
    p.add_argument("--keep-background", action="store_true", help="keep TF's 1001st (background) class")

    from .export.runtimes import FORMATS

    p = sub.add_parser("export", help="export a checkpoint to ONNX / TFLite / ExecuTorch / TorchScript, verified "
                                      "in its runtime")
    p.add_argument("--weights", required=True, metavar="CKPT",
                   help="a mobilenets checkpoint, or any weights file 'mobilenets convert' reads")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", "-o", metavar="PATH", help="output file (default: next to CKPT, the format's suffix)")
    p.add_argument("--int8", action="store_true", help="post-training static int8 quantization (onnx, tflite, executorch)")
    p.add_argument("--calib", metavar="DIR", help="calibration images: an image folder, or 'digits' (built-in)")
    p.add_argument("--eval", metavar="DIR", help="labelled images (class sub-folders, or 'digits') to report "
                                                 "top-1 agreement and accuracy on (default: --calib)")
    p.add_argument("--input-size", type=int, help="square input side (default: the checkpoint's crop size)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch at 1 even where the format allows any")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the verification run")

    p = sub.add_parser("bench", help="latency and throughput of our exports and PyTorch paths against torchvision's")
    p.add_argument("--model", action="append", choices=list_models(), help="only this model (repeatable)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer timing runs, no batch-32 throughput")
    p.add_argument("--skip", action="append", metavar="RUNTIME",
                   help="leave out a runtime: onnx, tflite, executorch, int8, compile (repeatable)")
    p.add_argument("--out-dir", default="benchmarks/results", help="where the JSON and PNG go")

    _add_train_parser(sub)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint")
    p.add_argument("--weights", required=True, metavar="CKPT", help="a mobilenets checkpoint (.safetensors)")
    p.add_argument("--data", metavar="DIR", help="DIR/val/<class>/* or DIR/<class>/*; default: digits val split")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--confusion-png", metavar="PNG", help="default: confusion_matrix.png next to the checkpoint")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error, not a skip")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_COMMANDS[args.command](args) or 0)
    except (MobileNetsError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"mobilenets {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mobilenets {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
