"""``mobilenets train``, ``train-detection``, ``train-segmentation`` (one loop, one config) and ``eval``."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from .common import float_range, format_table, int_range, model_name, model_names, output_path, setup_logging


def _record_given(action: argparse.Action) -> None:
    """Make ``action`` note its option in ``namespace._given`` when it is on the command line, so the handler
    knows what was asked for (what ``--resume`` must honour; an absent ``--model`` lets ``--weights`` name the
    model) while the parser's defaults, and the help that shows them, stay as they are."""

    class Given(type(action)):
        def __call__(self, parser, namespace, values, option_string=None):
            namespace._given = getattr(namespace, "_given", frozenset()) | {self.dest}
            super().__call__(parser, namespace, values, option_string)

    action.__class__ = Given


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..training import TrainConfig, train
    from ..training.state import check_resumed_task

    setup_logging()
    if getattr(args, "qat", False):
        return _train_qat(args)
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given = set(getattr(args, "_given", ())) | {"task"}
    if values["resume"]:  # the run's saved config, with only what was asked for changed
        check_resumed_task(values["resume"], args.task)  # `train --resume` of a detection run, say
        values = {k: values[k] for k in given}
    elif values["weights"] and "model" not in given:  # the model (and width) the weights file holds
        values["model"] = None
    config = TrainConfig(**values)
    train(config)  # logs its progress and, at the end, the best checkpoint (rank 0 only under torchrun)
    return 0


def _train_qat(args: argparse.Namespace) -> int:
    """``train --qat``: quantization-aware fine-tuning of ``--weights`` (mobilenets.training.qat)."""
    from ..errors import MobileNetsError
    from ..training.qat import QATConfig, train_qat

    if not args.weights:
        raise MobileNetsError("--qat fine-tunes a float checkpoint: pass --weights CKPT")
    # only what was given on the command line: QAT has its own defaults (a few epochs of fine-tuning)
    asked = set(getattr(args, "_given", ()))
    takes = ("data", "val_split", "epochs", "batch_size", "lr", "seed", "threads", "workers", "progress", "output")
    ignored = sorted(asked - set(takes) - {"weights", "qat"})
    if ignored:  # the model, its input size and the recipe come from the checkpoint and QAT's own schedule
        flag = {"progress": "--no-progress", "channels_last": "--no-channels-last"}
        raise MobileNetsError(
            f"--qat does not take {', '.join(flag.get(k, '--' + k.replace('_', '-')) for k in ignored)} (the "
            "model and its input come from --weights; QAT takes "
            f"{', '.join(flag.get(k, '--' + k.replace('_', '-')) for k in takes)})")
    given = {k: getattr(args, k) for k in takes if k in asked}
    train_qat(QATConfig(weights=args.weights, **given))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Evaluate any checkpoint on its task's data: classification, detection (COCO AP) or segmentation (mIoU)."""
    from ..checkpoint import read_checkpoint
    from ..errors import MobileNetsError, one_line
    from ..weights.dense import task_of
    from .inference import inference_options

    # a checkpoint, or one line naming what the file is instead (an exported ONNX model, timm weights, ...)
    task = task_of(read_checkpoint(args.weights)[1].config.name)
    common = dict(data=args.data, device=args.device, workers=args.workers, strict=args.strict)
    inference = inference_options(args)
    if inference is not None and task != "classification":
        raise MobileNetsError(f"--precision / --channels-last / --no-fold-bn / --compile / --cuda-graphs apply to "
                              f"classifiers; {args.weights} is a {task} checkpoint")
    if args.confusion_png is not None and task != "classification":
        raise MobileNetsError(f"--confusion-png is a classifier's confusion matrix; {args.weights} is a {task} "
                              "checkpoint (its files go to --output-dir)")
    if args.output_dir is not None and task == "classification":
        raise MobileNetsError(f"--output-dir is for detectors and segmenters; a classifier's confusion matrix goes "
                              "to --confusion-png")
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

    r = evaluate(args.weights, batch_size=args.batch_size, confusion_png=args.confusion_png, inference=inference,
                 **common)
    print(format_table(["class", "images", "top-1 %"],
                       [[one_line(c), int(r.confusion[i].sum()), f"{r.per_class[c]:.2f}"]
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


def _defaults(task: str) -> SimpleNamespace:
    """:class:`~mobilenets.training.TrainConfig`'s defaults for ``task``, read from the dataclass without
    building one (its validation imports the model registry, i.e. torch; --help must not)."""
    from dataclasses import MISSING, fields

    from ..training.config import TASK_DEFAULTS, TrainConfig

    d = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(TrainConfig)}
    return SimpleNamespace(**{**d, **TASK_DEFAULTS[task]})


def _add_train_parser(sub, task: str) -> None:
    from ..training.config import AMP_MODES, AUGMENTS, DECODE_MODES, DENSE_AUGMENTS, HEADS, OPTIMIZERS, SCHEDULES

    d = _defaults(task)
    command, help_, description, data_help = _TRAIN_HELP[task]
    p = sub.add_parser(command, help=help_, description=description)
    p.set_defaults(handler=_train, task=task)
    p.add_argument("--data", metavar="DIR", help=data_help)
    p.add_argument("--model", type=model_name(task), default=d.model, metavar="MODEL",
                   help=f"one of {model_names(task)}")
    p.add_argument("--width", type=float_range(0, 4, lo_open=True), default=d.width, help="the width multiplier")
    p.add_argument("--resolution", type=int_range(32, 2048), default=d.resolution,
                   help="input side" + (" (train crop)" if task == "classification" else " (square input)"))
    p.add_argument("--epochs", type=int_range(1, 100_000), default=d.epochs, help="passes over the training set")
    p.add_argument("--batch-size", type=int_range(1, 65_536), default=d.batch_size,
                   help="global batch (split over processes)")
    p.add_argument("--lr", type=float_range(0, 100, lo_open=True), default=d.lr,
                   help="peak learning rate" + (" (default: 4e-3 adamw, 0.1 sgd, 0.016 rmsprop, x batch/64)"
                                                if d.lr is None else ""))
    p.add_argument("--opt", choices=OPTIMIZERS, default=d.opt, help="the optimizer")
    p.add_argument("--momentum", type=float_range(0, 0.999), default=d.momentum, help="sgd and rmsprop momentum")
    p.add_argument("--weight-decay", type=float_range(0, 10), default=d.weight_decay,
                   help="never on norm weights and biases (default: 0.05 adamw, 4e-5 otherwise)")
    p.add_argument("--warmup-epochs", type=float_range(0, 100_000), default=d.warmup_epochs,
                   help="linear learning-rate warmup, in epochs (fractions allowed)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="learning-rate decay after warmup")
    p.add_argument("--ema-decay", type=float_range(0, 0.999999), default=d.ema_decay,
                   help="EMA of weights per step (0: off)")
    p.add_argument("--precise-bn", type=int_range(0, 10_000_000), default=d.precise_bn, metavar="N",
                   help="before each evaluation, recompute the batch-norm statistics from N training images "
                        "(0: evaluate with the running statistics)")
    p.add_argument("--hflip", type=float_range(0, 1), default=d.hflip,
                   help="horizontal flip probability (default: 0.5; 0 for the built-in digits)")
    if task == "classification":
        p.add_argument("--val-split", type=float_range(0, 0.999), default=d.val_split, metavar="F",
                       help="hold out this fraction of each class of a single class folder")
        p.add_argument("--label-smoothing", type=float_range(0, 0.999), default=d.label_smoothing,
                       help="cross-entropy label smoothing")
        p.add_argument("--augment", choices=AUGMENTS, default=d.augment,
                       help="extra augmentation after the random crop and flip (default: none)")
        p.add_argument("--crop-scale", type=float_range(0, 1, lo_open=True), nargs=2, default=d.crop_scale,
                       metavar=("MIN", "MAX"), help="RandomResizedCrop area range")
        p.add_argument("--crop-pct", type=float_range(0, 1, lo_open=True), default=d.crop_pct,
                       help="eval centre crop fraction (default: 0.875; 1 for the built-in digits)")
        p.add_argument("--dropout", type=float_range(0, 1), default=d.dropout,
                       help="dropout before the classifier (default: the paper's)")
        p.add_argument("--drop-path-rate", type=float_range(0, 0.999), default=d.drop_path_rate,
                       metavar="P", help="MobileNetV4: stochastic depth rising linearly over the blocks to P "
                                         "(TF's MNV4 Conv-M recipe: 0.075)")
    else:
        p.add_argument("--samples", type=int_range(1, 10_000_000), metavar="N",
                       help="built-in shapes set: training samples (default: 2000; the 200 val samples stay)")
        p.add_argument("--augment", choices=DENSE_AUGMENTS,
                       help="full: " + ("SSD's zoom-out + IoU crop" if task == "detection" else "random scale + crop")
                            + ", flip, colour; light: flip and colour (default: light on the built-in set, else full)")
        p.add_argument("--head", choices=HEADS, default=d.head,
                       help="paper: the TF reference configs; torchvision: torchvision's models")
    if task == "detection":
        p.add_argument("--reduced-tail", action="store_true", help="halve the last stage (V3 section 6.3, \u2020)")
    p.add_argument("--amp", choices=AMP_MODES, default=d.amp,
                   help="mixed precision autocast (auto: bf16/fp16 on GPU, none on CPU where it is slower)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep tensors in NCHW memory layout (channels-last is the default: faster convolutions)")
    p.add_argument("--seed", type=int_range(0, 2**63 - 1), default=d.seed, help="random seed (data order, init)")
    p.add_argument("--workers", type=int_range(0, 256), default=d.workers, help="DataLoader workers per process")
    p.add_argument("--threads", type=int_range(1, 1024), default=d.threads,
                   help="torch threads (default: torch's; 1 for the built-in digits, fastest there)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    if task == "classification":
        p.add_argument("--decode-on", choices=DECODE_MODES, default=d.decode_on,
                       help="where images are decoded, cropped, augmented and normalised: cpu (DataLoader workers) "
                            "or device (JPEGs decoded in batches on the GPU); auto: device on a GPU with a folder "
                            "of JPEGs")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training (slow start)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun (GPU)")
    p.add_argument("--weights", metavar="FILE",
                   help="fine-tune from these weights (new classifier; without --model, the model and width are "
                        "the file's)" if task == "classification" else
                   "initialise the backbone from classification weights (any format 'mobilenets convert' reads)")
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error, not a skip")
    p.add_argument("--output", metavar="DIR", help="run folder (default: runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder with its saved config; --epochs "
                   "extends it (schedule re-planned), runtime flags (--threads, --workers, --device, --amp, ...) "
                   "apply, other changes are refused")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    if task == "classification":
        p.add_argument("--qat", action="store_true",
                       help="quantization-aware fine-tuning of --weights (a float checkpoint) for int8 export: "
                            "3 epochs at lr 1e-4 (batch-norm statistics frozen) unless --epochs / --lr say otherwise; "
                            "writes qat.safetensors")
    for action in p._actions:
        if not isinstance(action, argparse._HelpAction):
            _record_given(action)


def add_commands(sub) -> None:
    for task in _TRAIN_HELP:
        _add_train_parser(sub, task)

    p = sub.add_parser("eval", help="evaluate a checkpoint: top-1/top-5 and a confusion matrix (classifiers), COCO "
                                    "AP (detectors), mIoU (segmenters)")
    p.add_argument("--weights", required=True, metavar="CKPT", help="a mobilenets checkpoint (.safetensors)")
    p.add_argument("--data", metavar="DIR", help="the task's data layout (see train / train-detection / "
                                                 "train-segmentation --help; the val split); default: the "
                                                 "built-in set (digits or shapes)")
    p.add_argument("--batch-size", type=int_range(1, 65_536), default=16, help="images per forward pass")
    p.add_argument("--workers", type=int_range(0, 256), default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--confusion-png", metavar="PNG", type=output_path("PNG file"),
                   help="classifiers: where the confusion matrix picture goes (default: confusion_matrix.png "
                        "next to the checkpoint)")
    p.add_argument("--output-dir", metavar="DIR", help="detectors / segmenters: where the metrics JSON and PNGs go "
                                                       "(default: next to the checkpoint)")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error, not a skip")
    from .inference import add_inference_args

    add_inference_args(p)
    p.set_defaults(handler=_eval)
