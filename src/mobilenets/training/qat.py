"""Quantization-aware training: fine-tune a float classifier for a few epochs under int8 fake quantization
(PyTorch's PT2E QAT flow, torchao), so that the int8 files ``export --int8`` writes from it lose less.

    mobilenets train --qat --weights runs/digits/best.safetensors [--epochs 3] [--lr 1e-4]

The model is exported (``torch.export``), prepared with :func:`torchao.quantization.pt2e.prepare_qat_pt2e` and
ExecuTorch's XNNPACK quantizer in its QAT configuration (symmetric per-channel int8 weights, int8
activations with moving-average min/max ranges, batch norm folded into each conv before its weights are
fake-quantized, as the int8 runtimes fold it), and trained; the last epoch runs with the observers frozen.

**Batch norm stays frozen** (``freeze_bn``, default): the folded convs use the float checkpoint's running
statistics throughout (the graph's batch norms in eval mode; dropout is then off too), so only weights and BN
affine parameters move, at a small learning rate (1e-4). With batch statistics (the torchao default) the
statistics drift with the fine-tuning batches and the float model after QAT moved away from the one it started
from: over 5 default-job digits checkpoints (2 epochs, ``benchmarks/int8_robustness.py``), the int8 ONNX file
kept 98.61% minimum of the QAT model's own top-1 (98.33% of the start's) at lr 4e-4 with BN statistics
updated; 99.16% / 98.05% with them frozen at 4e-4; 99.44% / 98.89% frozen at 1e-4 (99.16% / 98.61% at 3e-5).

**What the checkpoint stores.** The ordinary float model (conv weights *and* batch-norm parameters and
statistics, the same state-dict keys as any checkpoint of the model), fine-tuned under fake quantization:
folding its batch norm (:func:`mobilenets.export.fuse.fold_batchnorm`, which every export does) gives
exactly the weights the fake quantizers saw. Activation ranges are not stored for the runtimes: each int8
path computes them again on its own graph (onnxruntime's QDQ graph, litert-torch's and XNNPACK's PT2E graphs
differ in which tensors carry ranges, e.g. onnxruntime splits h-swish into HardSigmoid + Mul), with its
calibration method, on the calibration images; a QAT-trained network's activations are what its ranges
were learnt on, so re-observing them finds nearly the same ranges. The ranges QAT ended with are kept in
the checkpoint's metadata (``qat.ranges``: per observed tensor, its scale and zero point) for inspection.
Any int8 path therefore takes a QAT checkpoint like any other; ``benchmarks/int8_robustness.py`` measures
QAT against PTQ on each runtime.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import MobileNetsError, output_file

__all__ = ["QATConfig", "QATResult", "train_qat"]

log = logging.getLogger("mobilenets")

QAT_FILE = "qat.safetensors"


@dataclass
class QATConfig:
    """One QAT fine-tuning job. ``weights``: the float checkpoint to start from (a mobilenets classifier
    checkpoint; its classes, preprocessing and model are kept). ``data``: as ``mobilenets train``'s (None: the
    built-in digits). ``lr``: AdamW's peak (1e-4, a fortieth of training's 4e-3: fine-tuning, not training),
    cosine to 0 after one warm-up epoch. ``freeze_observers``: the last epochs train with fixed ranges (never
    the first epoch, which observes them)."""

    weights: str
    output: str | None = None  # run folder; None: runs/<checkpoint stem>-qat
    data: str | None = None
    val_split: float = 0.0
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0  # no decay: the weights sit on a quantization grid already learnt
    label_smoothing: float = 0.1
    freeze_observers: int = 1  # epochs at the end with the activation ranges fixed
    freeze_bn: bool = True  # batch norm keeps the float checkpoint's statistics (module docstring)
    seed: int = 0
    threads: int | None = 1  # torch intra-op threads (None: torch's default)
    workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.epochs, int) and 1 <= self.epochs <= 1000,
             f"epochs must be in [1, 1000], got {self.epochs}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 2,
             f"batch size must be >= 2, got {self.batch_size}"),
            (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0,
             f"lr must be > 0, got {self.lr}"),
            (isinstance(self.freeze_observers, int) and 0 <= self.freeze_observers <= self.epochs,
             f"freeze_observers must be in [0, epochs], got {self.freeze_observers}"),
            (isinstance(self.freeze_bn, bool), f"freeze_bn must be True or False, got {self.freeze_bn!r}"),
            (self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
             f"threads must be >= 1, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MobileNetsError(message)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QATResult:
    output: Path
    checkpoint: Path
    val_top1_float: float  # the starting checkpoint, float
    val_top1_qat: float  # the QAT model with fake quantization, after training
    history: list[dict] = field(default_factory=list)


def _data(config: QATConfig, resolution: int, pre):
    from ..tasks.classification import ClassificationTask
    from .config import TrainConfig

    tc = TrainConfig(data=config.data, val_split=config.val_split, resolution=resolution, workers=config.workers,
                     progress=False)
    return ClassificationTask(tc).build_data(pre)


@torch.no_grad()
def _top1(model, loader) -> float:
    hits = count = 0
    for x, y in loader:
        hits += int((model(x).argmax(1) == y).sum())
        count += len(y)
    return 100.0 * hits / max(count, 1)


def _ranges(gm: nn.Module) -> dict[str, list[float]]:
    """The scale and zero point of every activation fake-quantizer (per-tensor ones), by module name."""
    out = {}
    for name, mod in gm.named_modules():
        scale, zp = getattr(mod, "scale", None), getattr(mod, "zero_point", None)
        if name.startswith("activation_post_process") and isinstance(scale, torch.Tensor) and scale.numel() == 1:
            out[name] = [float(scale), float(zp)]
    return out


def train_qat(config: QATConfig) -> QATResult:
    """Fine-tune ``config.weights`` with int8 fake quantization; writes ``qat.safetensors`` (a float checkpoint of
    the same model, see the module docstring), ``metrics.csv`` and ``qat.json`` into the run folder."""
    from torch.utils.data import DataLoader, RandomSampler

    from ..checkpoint import CheckpointMeta, read_checkpoint, save_checkpoint
    from ..export.runtimes import require
    from ..weights import model_from_weights
    from .records import write_csv
    from .state import seed_everything

    require("executorch", "executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import (
        disable_observer,
        move_exported_model_to_eval,
        move_exported_model_to_train,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    t_run = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        model, report = model_from_weights(config.weights)
        info = report.info
        if getattr(getattr(model, "config", None), "task", "classification") != "classification" or \
                not hasattr(model, "classifier"):
            raise MobileNetsError(f"{config.weights}: QAT takes classifiers only, not {info.model}")
        _, meta = read_checkpoint(config.weights)  # a mobilenets checkpoint: its classes and preprocessing
        pre = meta.preprocessing
        seed_everything(config.seed)
        data = _data(config, pre.crop, pre)
        if meta.class_names is not None and list(data.classes) != list(meta.class_names):
            theirs, mine = list(data.classes), list(meta.class_names)
            diff = [f"{a!r} vs {b!r}" for a, b in zip(theirs, mine) if a != b][:3]
            raise MobileNetsError(f"the data's classes ({len(theirs)}) are not the checkpoint's ({len(mine)})"
                                  + (f": {', '.join(diff)}" if len(theirs) == len(mine) else "")
                                  + "; QAT fine-tunes the same classifier")
        if len(data.train) < config.batch_size:
            raise MobileNetsError(f"{len(data.train)} training images: fewer than one batch of {config.batch_size}")
        out = Path(config.output) if config.output else Path("runs") / f"{Path(config.weights).stem}-qat"
        output_file(out / QAT_FILE, "QAT checkpoint")
        gen = torch.Generator().manual_seed(config.seed)
        train_loader = DataLoader(data.train, batch_size=config.batch_size, drop_last=True, num_workers=config.workers,
                                  sampler=RandomSampler(data.train, generator=gen), generator=gen)
        val_loader = DataLoader(data.val, batch_size=64, num_workers=config.workers)
        model.eval()
        top1_float = _top1(model, val_loader)

        example = torch.randn(2, getattr(model.config, "in_chans", 3), pre.crop, pre.crop)
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        gm = torch.export.export(model.train(), (example,), dynamic_shapes=({0: batch},)).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
        gm = prepare_qat_pt2e(gm, quantizer)

        decay, no_decay = [], []
        for name, p in gm.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        steps = config.epochs * len(train_loader)
        warm = min(len(train_loader), steps // 2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                                  0.5 * (1 + math.cos(math.pi * (s - warm) / max(steps - warm, 1))))
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        history = []
        log.info("QAT from %s (%s, float val top-1 %.2f%%): %d epochs on %s", config.weights, info.model, top1_float,
                 config.epochs, data.description)
        for epoch in range(config.epochs):
            # the ranges are observed for at least one epoch before they may be frozen
            if epoch == max(1, config.epochs - config.freeze_observers):
                gm.apply(disable_observer)
            if config.freeze_bn:
                move_exported_model_to_eval(gm)  # BN with its running statistics (dropout off too), still trained
            else:
                move_exported_model_to_train(gm)
            t0, loss_sum, n = time.perf_counter(), 0.0, 0
            for x, y in train_loader:
                loss = criterion(gm(x), y)
                if not torch.isfinite(loss):
                    raise MobileNetsError(f"QAT epoch {epoch + 1}: the loss is {loss.item()} (lower --lr?)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum, n = loss_sum + loss.item() * len(y), n + len(y)
            move_exported_model_to_eval(gm)
            top1 = _top1(gm, val_loader)
            row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": loss_sum / n,
                   "val_top1_fake_quant": top1, "epoch_s": time.perf_counter() - t0}
            history.append(row)
            log.info("QAT epoch %d/%d: train loss %.4f | val top-1 (fake-quant) %.2f%% | %.1fs", epoch + 1,
                     config.epochs, row["train_loss"], top1, row["epoch_s"])

        # the fine-tuned float weights back into the model (the prepared graph keeps every state-dict key)
        trained = gm.state_dict()
        state = model.state_dict()
        missing = [k for k in state if k not in trained]
        if missing:
            raise MobileNetsError(f"QAT: the prepared graph lost {len(missing)} model tensors (e.g. {missing[0]})")
        model.load_state_dict({k: trained[k].detach().clone() for k in state})
        model.eval()
        top1_after_float = _top1(model, val_loader)
        out.mkdir(parents=True, exist_ok=True)
        qat_meta = {"config": config.to_dict(), "val_top1_float_start": top1_float,
                    "val_top1_fake_quant": history[-1]["val_top1_fake_quant"],
                    "val_top1_float_after": top1_after_float, "ranges": _ranges(gm),
                    "quantizer": "executorch XNNPACKQuantizer, symmetric per-channel, is_qat=True"}
        extra = dict(meta.extra)
        extra["qat"] = qat_meta
        ckpt = save_checkpoint(model, out / QAT_FILE, CheckpointMeta(
            config=model.config, class_names=meta.class_names, preprocessing=pre, extra=extra))
        write_csv(history, out / "metrics.csv")
        (out / "qat.json").write_text(json.dumps({k: v for k, v in qat_meta.items() if k != "ranges"}, indent=2))
        log.info("QAT done: val top-1 float %.2f%% -> fake-quant %.2f%% (float weights %.2f%%) -> %s; %.1fs",
                 top1_float, history[-1]["val_top1_fake_quant"], top1_after_float, ckpt,
                 time.perf_counter() - t_run)
        return QATResult(out, ckpt, top1_float, history[-1]["val_top1_fake_quant"], history)
    finally:
        torch.set_num_threads(threads_before)
