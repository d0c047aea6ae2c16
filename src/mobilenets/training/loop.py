"""The one training loop: :func:`train` runs a :class:`TrainConfig` of any task on one process or, under
torchrun, as DistributedDataParallel (gloo on CPU, NCCL on GPU), writing only from rank 0.

A run's folder holds ``config.json``, ``last.pt`` (the full training state, rewritten atomically after every
epoch: model, optimizer, scheduler, EMA, RNG states, metrics so far), ``best.safetensors`` (the best weights in
our checkpoint format, with class names, preprocessing and this config), ``metrics.csv``, TensorBoard event
files under ``tb/``, ``curves.png`` and ``train.log``. What differs between tasks (data, model, loss, metrics)
comes from the task object (:mod:`mobilenets.tasks`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointMeta, atomic_write, check_class_names, save_checkpoint
from ..errors import MobileNetsError, one_line, printable_records
from ..tasks import EvalContext, Task, get_task
from .batchnorm import batchnorms, folded_batchnorms, missing_statistics, precise_bn, unfold_batchnorm
from .config import TrainConfig
from .distributed import Dist, barrier, gather_objects, init_distributed
from .optim import make_optimizer, make_schedule
from .records import tensorboard_scalars, write_csv, write_curves
from .state import BEST_FILE, STATE_FILE, resolve_run, rng_state, seed_everything, set_rng_state

__all__ = ["train", "TrainResult"]

log = logging.getLogger("mobilenets")

FIX_STATS_IMAGES = 512  # training images measured for folded / missing statistics of loaded weights


@dataclass
class TrainResult:
    """What a run produced. ``best_metric`` is the task's selection metric (top-1 %, COCO AP, mIoU)."""

    output: Path
    best_checkpoint: Path
    best_metric: float
    best_epoch: int  # 1-based
    best_is_ema: bool  # the EMA weights scored best
    history: list[dict] = field(default_factory=list)  # one row of metrics per epoch
    metric_name: str = "top1"

    @property
    def best_top1(self) -> float:  # classification's name for it
        return self.best_metric

    @property
    def final(self) -> dict:
        return self.history[-1]


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    mode = config.amp
    if mode == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # On a CPU bf16 autocast was slower than fp32 for these depthwise-heavy nets even with AVX512-BF16
        # (measured: 107 vs 713 images/s, mobilenet_v3_small at 64, batch 64), so auto keeps fp32 there.
        return None
    if mode == "fp16" and device.type != "cuda":
        raise MobileNetsError("amp fp16 needs a GPU; use bf16 (or none) on a CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def train(config: TrainConfig) -> TrainResult:
    """Train (or fine-tune, or resume) a model as ``config`` says; returns where the results are.

    Under ``torchrun`` this runs DistributedDataParallel: the global batch ``config.batch_size`` is split over
    the processes, each sees its DistributedSampler shard, and only rank 0 writes. Nothing is written until the
    data and model are ready: a run that cannot start leaves no folder behind.
    """
    from ..device import resolve_device

    config, out, state = resolve_run(config)
    device = resolve_device(config.device)
    dist = init_distributed(device.type)
    if device.type == "cuda":
        try:  # a GPU that is visible but cannot start (driver, busy, out of memory) is one line, not a traceback
            torch.cuda.set_device(device)
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MobileNetsError(f"device {config.device!r}: CUDA could not start on {device} ({first})") from None
    amp_dtype = _amp_dtype(config, device)
    if config.sync_bn and dist.world > 1 and device.type != "cuda":
        raise MobileNetsError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm has no CPU implementation)")
    if config.batch_size % dist.world:
        raise MobileNetsError(f"batch size {config.batch_size} does not split over {dist.world} processes")
    if dist.main and out.exists() and not out.is_dir():
        raise MobileNetsError(f"{out}: exists and is not a folder")
    # (a folder whose run never finished an epoch holds only its config and logs: a new run may take it)
    held = [n for n in (STATE_FILE, BEST_FILE) if (out / n).exists()]
    if dist.main and state is None and held:  # a new run would overwrite another's checkpoints
        raise MobileNetsError(f"{out}: holds a run already ({', '.join(held)}); continue it with --resume {out}, "
                              "or give another --output")

    threads_before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    level_before = log.level
    if dist.main and log.getEffectiveLevel() > logging.INFO:  # train.log records progress whatever the level
        log.setLevel(logging.INFO)
    run = _Run(config, out, state, device, dist, amp_dtype)
    try:
        return run.execute()
    except ValueError as e:  # batch norm in training mode given one value per channel
        run.discard_if_unstarted()
        if "Expected more than 1 value per channel" in str(e):
            raise MobileNetsError("batch norm got one value per channel (a batch of 1 image whose feature map is "
                                  "1x1 there): use --batch-size 2 or more (and --precise-bn 0 or 2 or more)") \
                from None
        raise
    except BaseException:
        run.discard_if_unstarted()
        raise
    finally:
        torch.set_num_threads(threads_before)
        log.setLevel(level_before)
        run.close_log()


class _Run:
    """One run's state while it trains (the loop, split into its steps)."""

    def __init__(self, config: TrainConfig, out: Path, state: dict | None, device: torch.device, dist: Dist,
                 amp_dtype) -> None:
        self.config, self.out, self.state, self.device, self.dist, self.amp_dtype = (
            config, out, state, device, dist, amp_dtype)
        self.task: Task = get_task(config)
        self.handler = None
        # a run that fails before it starts leaves no folder behind: remember the topmost folder it would create
        self.created = next((d for d in reversed([out, *out.parents]) if not d.exists()), None) if dist.main else None

    # ------------------------------------------------------------------------------------------- set-up
    def _prepare(self) -> None:
        c, dist = self.config, self.dist
        seed_everything(c.seed + dist.rank)
        self.info = self.task.pretrained()
        self.pre = c.preprocessing(self.info.preprocessing if self.info else self.task.default_preprocessing)
        self.data = self.task.build_data(self.pre)
        check_class_names(self.data.classes, self.data.description)  # what best.safetensors will have to hold
        if len(self.data.train) == 0 or len(self.data.val) == 0:
            raise MobileNetsError(f"{self.data.description}: {len(self.data.train)} training and {len(self.data.val)} "
                                  "validation samples: both are needed")
        if len(self.data.train) // c.batch_size == 0:
            raise MobileNetsError(f"{len(self.data.train)} training images: fewer than one batch of {c.batch_size}")
        model = self.task.build_model(len(self.data.classes), self.info)
        if self.info is not None and self.state is None:
            self.task.load_pretrained(model, self.info)
        if c.freeze_backbone:
            head = {id(p) for m in self.task.head_modules(model) for p in m.parameters()}
            for p in model.parameters():
                p.requires_grad_(id(p) in head)
        model.to(self.device)
        if c.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self._loaders()
        self.ctx = EvalContext(self.device, self.amp_dtype, c.channels_last, dist.rank, dist.world)
        if self.info is not None and self.state is None:
            self._fix_loaded_statistics()
        self.ema = None
        if c.ema_decay > 0:
            from .ema import WeightEMA

            self.ema = WeightEMA(model, c.ema_decay)
        net = model
        if dist.world > 1:
            if c.sync_bn:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if c.compile:
            net = torch.compile(net)
        self.net = net
        # every batch norm's own momentum (after any SyncBatchNorm conversion), for the warm-up in _train_epoch
        self.bn_momenta = {m: m.momentum for m in batchnorms(model).values() if m.momentum is not None}
        # the last step at which the warm-up changes a momentum (from it on, 1/(t+1) <= every module's own)
        self.bn_warmup_last = max((math.ceil(1.0 / m) if m > 0 else math.inf for m in self.bn_momenta.values()),
                                  default=-1)
        self.optimizer = make_optimizer(c, model)
        self.scheduler = make_schedule(c, self.optimizer, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.history = 0, []
        self.best = {"metric": float("-inf"), "epoch": 0, "ema": False}
        if self.state is not None:
            self._restore()

    def _loaders(self) -> None:
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

        c, dist = self.config, self.dist
        per_rank = c.batch_size // dist.world
        self.loader_gen = torch.Generator().manual_seed(c.seed)
        if dist.world > 1:
            self.sampler = DistributedSampler(self.data.train, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                              seed=c.seed, drop_last=True)
        else:
            self.sampler = RandomSampler(self.data.train, generator=self.loader_gen)
        from ..gpu_data import device_feed

        feed = device_feed(c, self.pre, self.data, self.device)  # None: decoded and prepared by the workers
        train, val, collate = (feed.train, feed.val, feed.collate) if feed else (
            self.data.train, self.data.val, self.data.collate)
        more = feed.loader_options(c.workers) if feed else {"pin_memory": self.device.type == "cuda"}
        self.train_loader = DataLoader(train, batch_size=per_rank, sampler=self.sampler, drop_last=True,
                                       num_workers=c.workers, generator=self.loader_gen, collate_fn=collate, **more)
        val_idx = list(range(dist.rank, len(self.data.val), dist.world))  # a shard per rank, no padding duplicates
        self.val_loader = DataLoader(Subset(val, val_idx), batch_size=max(per_rank, 16 if
                                     c.task != "classification" else 64), num_workers=c.workers,
                                     collate_fn=collate)
        if feed:
            self.train_loader, self.val_loader = feed.wrap(self.train_loader, True), feed.wrap(self.val_loader, False)

    # ------------------------------------------------------------------------------------ batch norm
    def _bn_batches(self, images: int, salt: int):
        """Up to ``images`` training images (all ranks together) as input batches on the device: a random
        subset fixed by (seed, salt), the training transform, the training batch size per rank."""
        from torch.utils.data import DataLoader, Subset

        c, dist = self.config, self.dist
        per_rank = c.batch_size // dist.world
        n = min(images, len(self.data.train))
        gen = torch.Generator().manual_seed((c.seed * 1_000_003 + salt) % 2**63)
        order = torch.randperm(len(self.data.train), generator=gen)
        mine = order[:n].tolist()[dist.rank::dist.world]
        loader = DataLoader(Subset(self.data.train, mine), batch_size=min(per_rank, len(mine)) or 1,
                            drop_last=len(mine) >= per_rank, num_workers=c.workers, collate_fn=self.data.collate)
        for x, _ in loader:
            yield self.ctx.inputs(x)

    @contextmanager
    def _rng_kept(self):
        """Batch-norm passes draw training augmentations, but must not change the training that follows:
        every RNG they touch is restored afterwards (a run trains the same with or without them)."""
        py, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[self.device.index] if self.device.type == "cuda" else []):
            yield
        random.setstate(py)
        np.random.set_state(np_state)

    def _forward(self, model):
        def run(x):
            with self.ctx.autocast():
                return model(x)
        return run

    def _fix_loaded_statistics(self) -> None:
        """Folded (TFLite) or missing batch-norm statistics in the loaded weights, measured on training images
        before the first step (see batchnorm.py)."""
        c = self.config
        # a detector / segmenter: the loaded weights are its backbone's, measured through the backbone alone
        model = self.model.backbone if isinstance(getattr(self.model, "backbone", None), nn.Module) else self.model
        folded, missing = folded_batchnorms(model), missing_statistics(model)
        images = max(c.precise_bn or 0, FIX_STATS_IMAGES)
        if folded:
            t0 = time.perf_counter()
            with self._rng_kept():
                n = unfold_batchnorm(model, folded, self._bn_batches(images, 1), forward=self._forward(model),
                                     world=self.dist.world)
            log.info("%s: %d batch norms hold folded statistics (%s weights fold them into the convolutions): "
                     "unfolded with the statistics of %d training images (same eval-mode function; %.1fs)",
                     c.weights, len(folded), self.info.format, n, time.perf_counter() - t0)
        if missing:
            t0 = time.perf_counter()
            with self._rng_kept():
                n = precise_bn(model, self._bn_batches(images, 2), forward=self._forward(model),
                               world=self.dist.world)
            log.info("%s: %d batch norms have no running statistics: recomputed from %d training images (%.1fs)",
                     c.weights, len(missing), n, time.perf_counter() - t0)

    def _precise_bn(self, epoch: int) -> float:
        """Statistics of the weights about to be evaluated (model and EMA); returns the seconds it took."""
        c = self.config
        if not c.precise_bn:
            return 0.0
        t0 = time.perf_counter()
        for model in [self.model] + ([self.ema.module] if self.ema is not None else []):
            scope = self.task.head_modules(model) if c.freeze_backbone else None  # a frozen backbone's stay
            with self._rng_kept():
                precise_bn(model, self._bn_batches(c.precise_bn, 100 + epoch), forward=self._forward(model),
                           modules=scope, world=self.dist.world)
        return time.perf_counter() - t0

    def _restore(self) -> None:
        s = self.state
        saved, now = s.get("classes"), list(self.data.classes)  # (states written before it have no "classes")
        if saved is not None and list(saved) != now:  # label i would name another class from here on
            new, gone = [c for c in now if c not in saved], [c for c in saved if c not in now]
            what = "; ".join(p for p in (f"new: {', '.join(map(one_line, new[:3]))}" if new else "",
                                         f"gone: {', '.join(map(one_line, gone[:3]))}" if gone else "") if p)
            raise MobileNetsError(f"{self.config.resume}: the data's classes are not the run's "
                                  f"({what or 'the same names in another order'}); a resumed run keeps its classes")
        try:
            self.model.load_state_dict(s["model"])
            self.optimizer.load_state_dict(s["optimizer"])
            self.scheduler.load_state_dict(s["scheduler"])
            self.scaler.load_state_dict(s["scaler"])
            if self.ema is not None:
                if s["ema"] is None:
                    raise ValueError("the state has no EMA")
                self.ema.load_state_dict(s["ema"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MobileNetsError(f"{self.config.resume}: the saved state does not fit the run's config ({first})"
                                  ) from None
        self.start_epoch, self.history, self.best = s["epoch"], s["history"], s["best"]
        self._replan(json.loads(s["config"])["epochs"])
        rngs = s["rng"]
        set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0], self.loader_gen)

    def _replan(self, planned: int) -> None:
        """A resumed run given another number of epochs: the schedule becomes the one a run of ``c.epochs``
        epochs has (warmup and decay over the new total), continued from the current step, so the added epochs
        train at the learning rates such a run would use there (a finished run's rate had decayed to 0)."""
        c = self.config
        if planned == c.epochs:
            return
        sched = self.scheduler
        step = sched.last_epoch
        before = self.optimizer.param_groups[0]["lr"]
        for group, base, factor in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(step)
        sched._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        log.info("epochs %d -> %d: the %s schedule is re-planned over %d epochs and continues at step %d of %d "
                 "(lr %.3g, was %.3g)", planned, c.epochs, c.schedule, c.epochs, step,
                 c.epochs * len(self.train_loader), self.optimizer.param_groups[0]["lr"], before)

    def _open_log(self) -> None:
        """The run folder and its log, created only now that the run can start; what was logged while the run
        was being set up goes in first."""
        self.out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.addFilter(printable_records)
        if self.handler is not None:  # the set-up buffer
            log.removeHandler(self.handler)
            for record in self.handler.buffer:
                handler.handle(record)
        self.handler = handler
        log.addHandler(handler)

    def _buffer_log(self) -> None:
        from logging.handlers import BufferingHandler

        self.handler = BufferingHandler(10_000)
        log.addHandler(self.handler)

    def close_log(self) -> None:
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
            self.handler = None

    def discard_if_unstarted(self) -> None:
        """Remove the folders this run created if it never got to write its config (it could not start)."""
        if self.created is not None and not (self.out / "config.json").exists():
            self.close_log()
            shutil.rmtree(self.created, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------- run
    def execute(self) -> TrainResult:
        c, dist = self.config, self.dist
        if dist.main:
            self._buffer_log()
        self._prepare()
        writer = None
        if dist.main:
            self._open_log()
            log.info("%s: %d classes, %d train / %d val images; %s width %g at %d; %d process(es) on %s, amp %s",
                     self.data.description, len(self.data.classes), len(self.data.train), len(self.data.val),
                     c.model, c.width, c.resolution, dist.world, self.device.type, self.amp_dtype or "off")
            # a resumed run rewrites it too: the epochs and runtime flags it now runs with
            atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(c.to_dict(), indent=2)))
            if self.state is not None:
                log.info("resumed %s after epoch %d of %d%s", self.out, self.start_epoch, c.epochs,
                         ": nothing left to train (--epochs N extends it)" if self.start_epoch >= c.epochs else "")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.start_epoch + 1)
        ctx = self.ctx
        t_run = time.perf_counter()
        for epoch in range(self.start_epoch, c.epochs):
            if dist.world > 1:
                self.sampler.set_epoch(epoch)
            row = _train_epoch(self, epoch)
            bn_s = self._precise_bn(epoch)
            metrics = self.task.evaluate(self.model, self.val_loader, ctx)
            row.update({f"val_{k}": v for k, v in metrics.items()})
            candidates = [(metrics[self.task.best_metric], False)]
            if self.ema is not None:
                ema_metrics = self.task.evaluate(self.ema.module, self.val_loader, ctx)
                row.update({f"ema_val_{k}": v for k, v in ema_metrics.items()})
                candidates.append((ema_metrics[self.task.best_metric], True))
            self.history.append(row)
            value, is_ema = max(candidates, key=lambda v: v[0])
            improved = value > self.best["metric"]
            if improved:
                self.best = {"metric": value, "epoch": epoch + 1, "ema": is_ema}
            if dist.main:
                if improved:
                    self._save_best(epoch, value, is_ema)
                tensorboard_scalars(writer, row, epoch + 1)
                write_csv(self.history, self.out / "metrics.csv")
                log.info("epoch %d/%d: %s | %.0f images/s%s", epoch + 1, c.epochs, self.task.message(row),
                         row["images_per_s"], f" | precise BN {bn_s:.1f}s" if c.precise_bn else "")
            self._save_state(epoch)
            barrier(dist.world)
        if dist.main:
            writer.close()
            if self.history:
                write_curves(self.history, self.task.curve_panels, self.out / "curves.png")
            log.info("best val %s %.4g (epoch %d%s) -> %s; %.1fs", self.task.best_metric, self.best["metric"],
                     self.best["epoch"], ", EMA weights" if self.best["ema"] else "", self.out / BEST_FILE,
                     time.perf_counter() - t_run)
        return TrainResult(self.out, self.out / BEST_FILE, self.best["metric"], self.best["epoch"], self.best["ema"],
                           self.history, self.task.best_metric)

    def _save_best(self, epoch: int, value: float, is_ema: bool) -> None:
        src = self.ema.module if is_ema else self.model
        save_checkpoint(src, self.out / BEST_FILE, CheckpointMeta(
            config=src.config, class_names=self.data.classes, preprocessing=self.pre,
            extra={"task": self.config.task, "train_config": self.config.to_dict(), "epoch": epoch + 1,
                   f"val_{self.task.best_metric}": value, "ema": is_ema}))

    def _save_state(self, epoch: int) -> None:
        rng = gather_objects(rng_state(self.loader_gen), self.dist.world)
        if not self.dist.main:
            return
        payload = {
            "config": json.dumps(self.config.to_dict()), "epoch": epoch + 1, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
            "history": self.history, "best": self.best, "rng": rng, "classes": list(self.data.classes),
        }
        atomic_write(self.out / STATE_FILE, lambda tmp: torch.save(payload, tmp))


HOST_SYNC_STEPS = 20  # GPU training: steps between reads of the batch statistics (see _train_epoch)


def _host_sync_steps(device: torch.device) -> int:
    return 1 if device.type == "cpu" else HOST_SYNC_STEPS


def _read_sums(pending: dict, sums: dict[str, float]) -> None:
    """Add the statistics summed since the last read (numbers, or 0-d tensors on the device: read in one
    transfer) to ``sums``, and clear them."""
    tensors = [k for k, v in pending.items() if isinstance(v, torch.Tensor)]
    values = dict(zip(tensors, torch.stack([pending[k] for k in tensors]).tolist())) if tensors else {}
    for k, v in pending.items():
        sums[k] = sums.get(k, 0.0) + float(values.get(k, v))
    pending.clear()


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One pass over the training data; returns the epoch's row of training metrics."""
    from tqdm import tqdm

    c, task, model, dist = run.config, run.task, run.model, run.dist
    run.net.train()
    if c.freeze_backbone:  # a frozen backbone keeps its batch-norm statistics too
        model.eval()
        for m in task.head_modules(model):
            m.train()
    # the batch statistics are summed where they are computed; on a GPU they (and the loss's finiteness) are
    # read every HOST_SYNC_STEPS steps, not every step: a read waits for the GPU, and the host then cannot queue
    # the next step's kernels while the GPU runs this one. On the CPU every step, as before (it costs nothing).
    sync_every = _host_sync_steps(run.device)
    sums: dict[str, float] = {}
    pending: dict[str, torch.Tensor | float] = {}
    nonfinite = torch.zeros((), dtype=torch.bool, device=run.device)
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{c.epochs}", unit="batch", leave=False,
               disable=not (c.progress and dist.main), dynamic_ncols=True)
    t0 = time.perf_counter()
    first = epoch * len(run.train_loader)
    last = first + len(run.train_loader) - 1
    unread = 1  # the epoch's first step (1-based) not read yet
    for step, (x, targets) in enumerate(bar, start=first):
        # BN statistics warm-up: a cumulative average over the first steps (momentum 1/(t+1) until it falls to
        # the module's own), so no trace of the initial statistics (mean 0, var 1) is left after the first
        # step; 0.1 alone leaves 0.9^t of them (15% after 18 steps: validation at chance in short runs)
        if step <= run.bn_warmup_last:
            for m, momentum in run.bn_momenta.items():
                m.momentum = max(momentum, 1.0 / (step + 1))
        x = x.to(run.device, non_blocking=True)
        if c.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = task.targets_to(targets, run.device)
        with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            outputs = run.net(x)
            loss, stats = task.loss(outputs, targets)
        if sync_every == 1:
            if not torch.isfinite(loss):
                raise MobileNetsError(f"epoch {epoch + 1}: the loss is {loss.item()} (lower --lr?)")
        else:
            nonfinite |= ~torch.isfinite(loss.detach())
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(model)
        for k, v in stats.items():
            v = v.detach().double() if isinstance(v, torch.Tensor) else v
            pending[k] = pending[k] + v if k in pending else v
        if (step - first + 1) % sync_every == 0 or step == last:
            _read_sums(pending, sums)
            if bool(nonfinite):
                raise MobileNetsError(f"epoch {epoch + 1}: the loss became non-finite within steps "
                                      f"{unread}-{step - first + 1} (lower --lr?)")
            unread = step - first + 2
            summary = task.train_summary(sums)
            bar.set_postfix({k: f"{v:.3f}" for k, v in summary.items()},
                            img_s=f"{sums['count'] * dist.world / (time.perf_counter() - t0):.0f}")
    elapsed = time.perf_counter() - t0
    if dist.world > 1:
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        import torch.distributed as tdist

        t = totals.to(run.device)
        tdist.all_reduce(t)
        sums = dict(zip(keys, t.cpu().tolist()))
    row = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"]}
    row.update({f"train_{k}": v for k, v in task.train_summary(sums).items()})
    row.update({"images_per_s": sums.get("count", 0.0) / elapsed, "epoch_s": elapsed})
    return row
