"""``mobilenets train``, ``train-detection``, ``train-segmentation`` (one loop, one config) and ``eval``."""

from __future__ import annotations

import argparse

from .common import float_range, format_table, int_range, model_name, output_path, setup_logging


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..training import TrainConfig, train

    setup_logging()
    if getattr(args, "qat", False):
        return _train_qat(args)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
    train(config)  # logs its progress and, at the end, the best checkpoint (rank 0 only under torchrun)
    return 0


def _train_qat(args: argparse.Namespace) -> int:
    """``train --qat``: quantization-aware fine-tuning of ``--weights`` (mobilenets.training.qat)."""
    from ..errors import MobileNetsError
    from ..training.qat import QATConfig, train_qat

    if not args.weights:
        raise MobileNetsError("--qat fine-tunes a float checkpoint: pass --weights CKPT")
    from ..training import TrainConfig

    train_default = TrainConfig()
    # --epochs / --batch-size left at training's defaults take QAT's own (a few epochs of fine-tuning)
    given = {k: getattr(args, k) for k in ("data", "val_split", "epochs", "batch_size", "lr", "seed", "threads",
                                           "workers", "progress", "output") if getattr(args, k, None) is not None
             and not (k in ("epochs", "batch_size") and getattr(args, k) == getattr(train_default, k))}
    train_qat(QATConfig(weights=args.weights, **given))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Evaluate any checkpoint on its task's data: classification, detection (COCO AP) or segmentation (mIoU)."""
    from ..weights import inspect_weights
    from ..weights.dense import task_of

    task = task_of(inspect_weights(args.weights).model)
    common = dict(data=args.data, device=args.device, workers=args.workers, strict=args.strict)
    if task == "detection":
        from ..detection.evaluate import evaluate_detector
        from .detection import format_detection_eval

        print(format_detection_eval(evaluate_detector(args.weights, batch_size=args.batch_size,
                                                      output_dir=args.output_dir, **common)))
        return 0
    if task == "segmentation":
        from ..segmentation.evaluate import evaluate_segmenter
        from .segmentation import format_segmentation_eval

        print(format_segmentation_eval(evaluate_segmenter(args.weights, batch_size=args.batch_size,
                                                          output_dir=args.output_dir, **common)))
        return 0
    from ..evaluate import evaluate

    r = evaluate(args.weights, batch_size=args.batch_size, confusion_png=args.confusion_png, **common)
    print(format_table(["class", "images", "top-1 %"],
                       [[c, int(r.confusion[i].sum()), f"{r.per_class[c]:.2f}"]
                        for i, c in enumerate(r.class_names) if c in r.per_class]))
    print(f"\n{r.count} images: top-1 {r.top1:.2f}%  top-5 {r.top5:.2f}%")
    print(f"confusion matrix: {r.confusion_png}")
    return 0


_TRAIN_HELP = {
    "classification": ("train", "train or fine-tune a classifier (built-in digits by default; torchrun for DDP)",
                       "Train or fine-tune a classifier. With no arguments: mobilenet_v3_small on the built-in "
                       "digits. Under torchrun: DistributedDataParallel.",
                       "ImageFolder root: DIR/train/<class>/*, DIR/val/<class>/* (or class folders with "
                       "--val-split); default: built-in digits"),
    "detection": ("train-detection", "train an SSDLite detector (built-in shapes over photos by default)",
                  "Train SSDLite. With no arguments: ssdlite_mobilenet_v3_small on the built-in shapes-over-photos "
                  "set. Under torchrun: DistributedDataParallel.",
                  "Pascal VOC root (Annotations/, JPEGImages/, ImageSets/Main/) or COCO root "
                  "(annotations/instances_{train,val}*.json + image folders); default: built-in shapes"),
    "segmentation": ("train-segmentation", "train an LR-ASPP / DeepLabv3 segmenter (built-in shapes by default)",
                     "Train semantic segmentation. With no arguments: lraspp_mobilenet_v3_small on the built-in "
                     "shapes-over-photos set. Under torchrun: DistributedDataParallel.",
                     "Pascal VOC root (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) or a folder of "
                     "{train,val}/images + {train,val}/masks; default: built-in shapes"),
}


def _add_train_parser(sub, task: str) -> None:
    from ..registry import list_models
    from ..training import AMP_MODES, AUGMENTS, DENSE_AUGMENTS, HEADS, OPTIMIZERS, SCHEDULES, TrainConfig

    d = TrainConfig(task=task)
    command, help_, description, data_help = _TRAIN_HELP[task]
    p = sub.add_parser(command, help=help_, description=description)
    p.set_defaults(handler=_train, task=task)
    p.add_argument("--data", metavar="DIR", help=data_help)
    p.add_argument("--model", type=model_name(task), default=d.model, metavar="MODEL",
                   help=f"one of {', '.join(list_models(task))} (default {d.model})")
    p.add_argument("--width", type=float_range(0, 4, lo_open=True), default=d.width)
    p.add_argument("--resolution", type=int_range(32, 2048), default=d.resolution,
                   help="input side" + (" (train crop)" if task == "classification" else " (square input)"))
    p.add_argument("--epochs", type=int_range(1, 100_000), default=d.epochs)
    p.add_argument("--batch-size", type=int_range(1, 65_536), default=d.batch_size,
                   help="global batch (split over processes)")
    p.add_argument("--lr", type=float_range(0, 100, lo_open=True), default=d.lr,
                   help="default: 4e-3 adamw, 0.1 sgd, 0.016 rmsprop, x batch/64")
    p.add_argument("--opt", choices=OPTIMIZERS, default=d.opt)
    p.add_argument("--momentum", type=float_range(0, 0.999), default=d.momentum)
    p.add_argument("--weight-decay", type=float_range(0, 10), default=d.weight_decay,
                   help="default 0.05 adamw, 4e-5 otherwise; never on norm weights and biases")
    p.add_argument("--warmup-epochs", type=float_range(0, 100_000), default=d.warmup_epochs)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="learning-rate decay after warmup")
    p.add_argument("--ema-decay", type=float_range(0, 0.999999), default=d.ema_decay,
                   help="EMA of weights per step (0: off)")
    p.add_argument("--hflip", type=float_range(0, 1), default=d.hflip,
                   help="flip probability (default 0.5; 0 for digits)")
    if task == "classification":
        p.add_argument("--val-split", type=float_range(0, 0.999), default=d.val_split, metavar="F",
                       help="hold out this fraction of each class of a single class folder")
        p.add_argument("--label-smoothing", type=float_range(0, 0.999), default=d.label_smoothing)
        p.add_argument("--augment", choices=AUGMENTS, default=d.augment)
        p.add_argument("--crop-scale", type=float_range(0, 1, lo_open=True), nargs=2, default=d.crop_scale,
                       metavar=("MIN", "MAX"), help="RandomResizedCrop area range")
        p.add_argument("--crop-pct", type=float_range(0, 1, lo_open=True), default=d.crop_pct,
                       help="eval centre crop (default 0.875; 1 digits)")
        p.add_argument("--dropout", type=float_range(0, 1), default=d.dropout)
    else:
        p.add_argument("--samples", type=int_range(1, 10_000_000), metavar="N",
                       help="built-in shapes set: training samples (default 2000; the 200 val samples stay)")
        p.add_argument("--augment", choices=DENSE_AUGMENTS,
                       help="full: " + ("SSD's zoom-out + IoU crop" if task == "detection" else "random scale + crop")
                            + ", flip, colour; light: flip and colour (default: light on the built-in set, else full)")
        p.add_argument("--head", choices=HEADS, default=d.head,
                       help="paper: the TF reference configs; torchvision: torchvision's models")
    if task == "detection":
        p.add_argument("--reduced-tail", action="store_true", help="halve the last stage (V3 section 6.3, \u2020)")
    p.add_argument("--amp", choices=AMP_MODES, default=d.amp,
                   help="mixed precision autocast (auto: bf16/fp16 on GPU, none on CPU where it is slower)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--seed", type=int_range(0, 2**63 - 1), default=d.seed)
    p.add_argument("--workers", type=int_range(0, 256), default=d.workers, help="DataLoader workers per process")
    p.add_argument("--threads", type=int_range(1, 1024), default=d.threads,
                   help="torch threads (default: torch's; 1 for the built-in digits, fastest there)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun (GPU)")
    p.add_argument("--weights", metavar="FILE",
                   help="fine-tune from these weights (new classifier)" if task == "classification" else
                   "initialise the backbone from classification weights (any format 'mobilenets convert' reads)")
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error, not a skip")
    p.add_argument("--output", metavar="DIR", help="run folder (default runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder (its saved config is used)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    if task == "classification":
        p.add_argument("--qat", action="store_true",
                       help="quantization-aware fine-tuning of --weights (a float checkpoint) for int8 export: "
                            "3 epochs at lr 4e-4 unless --epochs / --lr say otherwise; writes qat.safetensors")


def add_commands(sub) -> None:
    for task in _TRAIN_HELP:
        _add_train_parser(sub, task)

    p = sub.add_parser("eval", help="evaluate a checkpoint: top-1/top-5 and a confusion matrix (classifiers), COCO "
                                    "AP (detectors), mIoU (segmenters)")
    p.add_argument("--weights", required=True, metavar="CKPT", help="a mobilenets checkpoint (.safetensors)")
    p.add_argument("--data", metavar="DIR", help="the task's data layout (see train / train-detection / "
                                                 "train-segmentation --help; the val split); default: the "
                                                 "built-in set (digits or shapes)")
    p.add_argument("--batch-size", type=int_range(1, 65_536), default=16)
    p.add_argument("--workers", type=int_range(0, 256), default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--confusion-png", metavar="PNG", type=output_path("PNG file"),
                   help="classifiers: default confusion_matrix.png next to the checkpoint")
    p.add_argument("--output-dir", metavar="DIR", help="detectors / segmenters: where the metrics JSON and PNGs go "
                                                       "(default: next to the checkpoint)")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error, not a skip")
    p.set_defaults(handler=_eval)
