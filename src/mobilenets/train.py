"""Training and fine-tuning: :func:`train` runs one :class:`TrainConfig` on one process or, under torchrun,
as DistributedDataParallel (gloo on CPU, NCCL on GPU), writing only from rank 0.

A run's folder holds ``config.json``, ``last.pt`` (the full training state, rewritten atomically after every
epoch: model, optimizer, scheduler, EMA, RNG states, metrics so far), ``best.safetensors`` (the best weights
in our checkpoint format, with class names, preprocessing and this config), ``metrics.csv``, TensorBoard
event files under ``tb/``, ``curves.png`` and ``train.log``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointMeta, atomic_write, save_checkpoint
from .errors import MobileNetsError
from .preprocess import IMAGENET, Preprocessing

__all__ = ["TrainConfig", "TrainResult", "train"]

log = logging.getLogger("mobilenets")

STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"
OPTIMIZERS = ("sgd", "rmsprop", "adamw")
AMP_MODES = ("auto", "none", "bf16", "fp16")
AUGMENTS = ("none", "randaugment", "trivialaugment")


@dataclass
class TrainConfig:
    """One training run. The defaults train ``mobilenet_v3_small`` on the built-in digits (``data=None``) to
    >= 95% validation top-1 in well under 5 minutes on 2 CPU cores (measured: see the README)."""

    data: str | None = None  # ImageFolder root (train/ + val/, or class folders with val_split); None: digits
    val_split: float = 0.0  # fraction of each class held out when `data` has no train/ and val/
    model: str = "mobilenet_v3_small"
    width: float = 1.0
    resolution: int = 64  # digits are 8x8 upscaled: 64 is plenty and fast on a CPU
    epochs: int = 10
    batch_size: int = 64  # global batch: split over the processes under torchrun
    lr: float | None = None  # None: 4e-3 for adamw, 0.1 for sgd, 0.016 for rmsprop, scaled by batch_size/64
    opt: str = "adamw"
    momentum: float = 0.9  # sgd and rmsprop
    weight_decay: float | None = None  # None: 0.05 for adamw, 4e-5 otherwise (the V1-V3 papers' value)
    warmup_epochs: float = 1.0  # linear warmup, then cosine decay to 0 per step
    label_smoothing: float = 0.1
    ema_decay: float = 0.99  # per optimizer step; 0 turns the EMA off
    augment: str = "none"  # none | randaugment | trivialaugment
    crop_scale: tuple[float, float] = (0.6, 1.0)  # RandomResizedCrop's area range
    hflip: float | None = None  # None: 0.5, but 0 for digits (not mirror symmetric)
    crop_pct: float | None = None  # eval centre crop; None: 0.875, but 1.0 for digits (the digit fills the image)
    dropout: float | None = None  # None: the paper's
    amp: str = "auto"  # auto: bf16 (or fp16) on GPUs, none on CPUs; bf16 works on CPUs too, fp16 GPU only
    channels_last: bool = True
    seed: int = 0
    workers: int = 0  # DataLoader worker processes per rank
    threads: int | None = None  # torch intra-op threads; None: torch's default, but 1 for digits (see below)
    device: str = "auto"  # auto: cuda:<local rank> if available, else cpu
    sync_bn: bool = False  # SyncBatchNorm under torchrun (GPU)
    weights: str | None = None  # fine-tune from these weights; the classifier is replaced for the new classes
    freeze_backbone: bool = False  # train the head (V3's head conv and the classifier) only
    strict: bool = False  # an unreadable image is an error instead of a skipped, counted file
    output: str | None = None  # run folder; None: runs/<model>-<UTC time>
    resume: str | None = None  # a run folder (or its last.pt) to continue; its saved config is used
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        self.crop_scale = tuple(self.crop_scale)
        from .registry import list_models

        checks = [
            (self.model in list_models(), f"unknown model {self.model!r} (one of {', '.join(list_models())})"),
            (self.opt in OPTIMIZERS, f"opt must be one of {', '.join(OPTIMIZERS)}, got {self.opt!r}"),
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}"),
            (self.augment in AUGMENTS, f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.resolution >= 32, f"resolution must be >= 32, got {self.resolution}"),
            (self.width > 0, f"width must be positive, got {self.width}"),
            (0.0 <= self.val_split < 1.0, f"val split must be in [0, 1), got {self.val_split}"),
            (0.0 <= self.ema_decay < 1.0, f"ema decay must be in [0, 1), got {self.ema_decay}"),
            (self.lr is None or self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
             f"crop scale must be 0 < min <= max <= 1, got {self.crop_scale}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MobileNetsError(msg)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    # Resolved defaults (the fields keep None so a saved config shows what was asked for).
    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        # adamw 4e-3: measured on the default digits run (98.6% best val top-1); sgd 0.1 and rmsprop 0.016 are
        # untuned starting points, all per 64 images (linear scaling with the batch).
        return {"adamw": 4e-3, "sgd": 0.1, "rmsprop": 0.016}[self.opt] * self.batch_size / 64

    @property
    def wd(self) -> float:
        return self.weight_decay if self.weight_decay is not None else (0.05 if self.opt == "adamw" else 4e-5)

    @property
    def flip_p(self) -> float:
        return self.hflip if self.hflip is not None else (0.0 if self.data is None else 0.5)

    @property
    def eval_crop_pct(self) -> float:
        return self.crop_pct if self.crop_pct is not None else (1.0 if self.data is None else 0.875)

    @property
    def num_threads(self) -> int | None:
        # The 64x64 digits net gains nothing from a second thread and a second thread is 10-30x slower when
        # another process holds a core (measured on 2 cores with one busy: 470 images/s on 1 thread, 17-42 on 2).
        return self.threads if self.threads is not None else (1 if self.data is None else None)

    def preprocessing(self, base: Preprocessing = IMAGENET) -> Preprocessing:
        """How evaluation images are prepared (saved with the weights); mean/std are ``base``'s (the
        pretrained weights' when fine-tuning)."""
        return Preprocessing(self.resolution, round(self.resolution / self.eval_crop_pct), base.mean, base.std)


@dataclass
class TrainResult:
    """What a run produced."""

    output: Path
    best_checkpoint: Path
    best_top1: float  # validation top-1 (%) of the best checkpoint
    best_epoch: int  # 1-based
    best_is_ema: bool  # the EMA weights scored best
    history: list[dict] = field(default_factory=list)  # one row of metrics per epoch

    @property
    def final(self) -> dict:
        return self.history[-1]


# --------------------------------------------------------------------------------------------------- helpers

@dataclass
class _Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> _Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; start the process group (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return _Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        return torch.device(config.device)
    except RuntimeError as e:
        raise MobileNetsError(f"bad device {config.device!r}: {e}") from None


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(loader_gen: torch.Generator) -> dict:
    """Every RNG a run draws from, as tensors and plain lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "loader": loader_gen.get_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _pretrained_info(config: TrainConfig):
    """What the fine-tuning weights are (any format :func:`mobilenets.load_weights` reads), checked against
    the model asked for; None without ``config.weights``."""
    if not config.weights:
        return None
    from .weights import inspect_weights

    info = inspect_weights(config.weights)
    if info.model != config.model or not math.isclose(info.width, config.width):
        raise MobileNetsError(f"{config.weights}: weights of {info.model} width {info.width:g}, not "
                              f"{config.model} width {config.width:g}")
    return info


def _load_pretrained(model: nn.Module, path: str) -> None:
    """Load fine-tuning weights into ``model``; a classifier of another class count is re-initialised."""
    import warnings

    from .weights import load_weights

    with warnings.catch_warnings():  # the classifier note goes to the log instead
        warnings.simplefilter("ignore", UserWarning)
        report = load_weights(model, path)
    log.info("fine-tuning from %s (%s weights): %d tensors loaded%s", path, report.info.format, len(report.loaded),
             f", new classifier for {model.config.num_classes} classes" if report.reinitialized else "")


def _ema_with_warmup(decay: float):
    """EMA update for AveragedModel with timm's warmup, decay_t = min(decay, (1 + t) / (10 + t)): early on the
    average follows the model quickly, so the initial weights and BN statistics (a running variance of 1 next to
    trained ones of 1e-3) do not linger in short runs."""

    def update(ema_params, params, num_averaged):
        if not ema_params[0].is_floating_point():  # num_batches_tracked: follow the model
            torch._foreach_copy_(ema_params, params)
            return
        t = float(num_averaged)
        torch._foreach_lerp_(ema_params, params, 1.0 - min(decay, (1.0 + t) / (10.0 + t)))

    return update


def _head_modules(model) -> list[nn.Module]:
    return [m for m in (getattr(model, "head_conv", None), model.classifier) if m is not None]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norm weights and biases (every 1-d parameter)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.wd)
    if config.opt == "sgd":
        return torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum, nesterov=True)
    if config.opt == "rmsprop":  # the V2/V3 papers' optimizer; TF adds eps 1e-3 inside the sqrt: sqrt(1e-3) here
        return torch.optim.RMSprop(groups, lr=config.base_lr, alpha=0.9, eps=0.0316, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.base_lr)


def _warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return factor


@dataclass
class _Data:
    classes: list[str]
    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset


def _build_data(config: TrainConfig, pre: Preprocessing) -> _Data:
    from .data import ImageFiles, load_image_folders, train_transform

    tt = train_transform(config.resolution, mean=pre.mean, std=pre.std, crop_scale=config.crop_scale,
                         hflip=config.flip_p, augment=config.augment)
    if config.data is None:
        from .digits import DIGITS_CLASSES, DigitsDataset

        return _Data(list(DIGITS_CLASSES), DigitsDataset("train", image_size=config.resolution, transform=tt),
                     DigitsDataset("val", image_size=pre.resize, transform=pre.transform()))
    splits = load_image_folders(config.data, val_split=config.val_split, strict=config.strict)
    return _Data(splits.classes, ImageFiles(splits.train, splits.classes, transform=tt, strict=config.strict),
                 ImageFiles(splits.val, splits.classes, transform=pre.transform(), strict=config.strict))


def _evaluate_model(model: nn.Module, loader, device, amp_dtype, channels_last: bool, num_classes: int,
                    dist: _Dist) -> dict:
    """Loss, top-1 and top-5 (%) over the loader (each rank holds a shard; sums are all-reduced)."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1 hits, top-5 hits, count
    k = min(5, num_classes)
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            logits = logits.float()
            top = logits.topk(k, dim=1).indices
            sums += torch.tensor([
                nn.functional.cross_entropy(logits, y, reduction="sum").item(),
                (top[:, 0] == y).sum().item(), (top == y[:, None]).any(1).sum().item(), len(y)])
    if dist.world > 1:
        import torch.distributed as tdist

        sums_dev = sums.to(device)
        tdist.all_reduce(sums_dev)
        sums = sums_dev.cpu()
    n = max(sums[3].item(), 1.0)
    return {"loss": sums[0].item() / n, "top1": 100 * sums[1].item() / n, "top5": 100 * sums[2].item() / n}


def _write_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="val")
    b.plot(ep, [h["train_top1"] for h in history], "o-", label="train")
    b.plot(ep, [h["val_top1"] for h in history], "o-", label="val")
    if any("ema_val_top1" in h for h in history):
        a.plot(ep, [h.get("ema_val_loss") for h in history], "o--", label="val (EMA)")
        b.plot(ep, [h.get("ema_val_top1") for h in history], "o--", label="val (EMA)")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def _write_csv(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for h in history for k in h))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def _resolve_resume(config: TrainConfig) -> tuple[TrainConfig, Path, dict | None]:
    """The config, run folder and saved state of the run to continue (or a fresh run's)."""
    if config.resume is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = Path(config.output) if config.output else Path("runs") / f"{config.model}-{stamp}"
        return config, out, None
    p = Path(config.resume)
    state_path = p / STATE_FILE if p.is_dir() else p
    if not state_path.is_file():
        raise MobileNetsError(f"{config.resume}: no training state to resume (expected {state_path})")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = TrainConfig.from_dict(json.loads(state["config"]))
    except MobileNetsError:
        raise
    except Exception as e:  # a foreign or damaged file: torch raises many types here
        raise MobileNetsError(f"{state_path}: not a mobilenets training state ({type(e).__name__}: {e})") from None
    saved.resume = str(state_path)
    saved.progress = config.progress
    return saved, state_path.parent, state


# ------------------------------------------------------------------------------------------------------ train

def train(config: TrainConfig) -> TrainResult:
    """Train (or fine-tune, or resume) a model as ``config`` says; returns where the results are.

    Under ``torchrun`` this runs DistributedDataParallel: the global batch ``config.batch_size`` is split over
    the processes, each sees its DistributedSampler shard, and only rank 0 writes.
    """
    config, out, state = _resolve_resume(config)
    device = _device(config)
    dist = _init_distributed(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp_dtype = _amp_dtype(config, device)
    if config.sync_bn and dist.world > 1 and device.type != "cuda":
        raise MobileNetsError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm has no CPU implementation)")
    if config.batch_size % dist.world:
        raise MobileNetsError(f"batch size {config.batch_size} does not split over {dist.world} processes")

    threads_before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    handler, level_before = None, log.level
    # a run that fails before it starts leaves no folder behind: remember the topmost folder it creates
    created = next((d for d in reversed([out, *out.parents]) if not d.exists()), None) if dist.main else None
    if dist.main:
        if log.getEffectiveLevel() > logging.INFO:  # train.log records the run's progress whatever the caller's level
            log.setLevel(logging.INFO)
        out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    try:
        return _train(config, out, state, device, dist, amp_dtype)
    except MobileNetsError:
        if created is not None and not (out / "config.json").exists():
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads_before)
        log.setLevel(level_before)
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _train(config: TrainConfig, out: Path, state: dict | None, device: torch.device, dist: _Dist,
           amp_dtype: torch.dtype | None) -> TrainResult:
    from torch.optim.swa_utils import AveragedModel
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    from .factory import create_model

    _seed_everything(config.seed + dist.rank)
    info = _pretrained_info(config)
    pre = config.preprocessing(info.preprocessing if info else IMAGENET)
    data = _build_data(config, pre)
    num_classes = len(data.classes)
    if dist.main:
        log.info("%s: %d classes, %d train / %d val images; %s width %g at %d; %d process(es) on %s, amp %s",
                 config.data or "digits (built-in)", num_classes, len(data.train), len(data.val), config.model,
                 config.width, config.resolution, dist.world, device.type, amp_dtype or "off")
        if not config.resume:
            atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(config.to_dict(), indent=2)))

    options = {"tf_padding": info.tf_padding, "bn_eps": info.bn_eps} if info else {}  # TF-trained weights
    model = create_model(config.model, width=config.width, num_classes=num_classes, dropout=config.dropout,
                         **options)
    if info is not None and state is None:
        _load_pretrained(model, config.weights)
    if config.freeze_backbone:
        head = {id(p) for m in _head_modules(model) for p in m.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = None
    if config.ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=_ema_with_warmup(config.ema_decay), use_buffers=True)

    per_rank_batch = config.batch_size // dist.world
    loader_gen = torch.Generator().manual_seed(config.seed)
    if dist.world > 1:
        sampler = DistributedSampler(data.train, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                     seed=config.seed, drop_last=True)
    else:
        sampler = RandomSampler(data.train, generator=loader_gen)
    if len(data.train) // config.batch_size == 0:
        raise MobileNetsError(f"{len(data.train)} training images: fewer than one batch of {config.batch_size}")
    train_loader = DataLoader(data.train, batch_size=per_rank_batch, sampler=sampler, drop_last=True,
                              num_workers=config.workers, generator=loader_gen, pin_memory=device.type == "cuda",
                              persistent_workers=False)
    val_idx = list(range(dist.rank, len(data.val), dist.world))  # a shard per rank, no padding duplicates
    val_loader = DataLoader(torch.utils.data.Subset(data.val, val_idx), batch_size=max(per_rank_batch, 64),
                            num_workers=config.workers)

    net = model
    if dist.world > 1:
        if config.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _make_optimizer(config, model)
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(total, round(config.warmup_epochs * steps_per_epoch)))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    start_epoch, history, best = 0, [], {"top1": -1.0, "epoch": 0, "ema": False}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch, history, best = state["epoch"], state["history"], state["best"]
        _set_rng_state(state["rng"][dist.rank] if dist.rank < len(state["rng"]) else state["rng"][0], loader_gen)
        if dist.main:
            log.info("resumed %s after epoch %d of %d", out, start_epoch, config.epochs)

    writer = None
    if dist.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch + 1)
    meta_extra = {"train_config": config.to_dict()}
    t_run = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if dist.world > 1:
            sampler.set_epoch(epoch)
        row = _train_epoch(config, net, model, ema, train_loader, optimizer, scheduler, scaler, criterion, device,
                           amp_dtype, dist, epoch)
        metrics = _evaluate_model(model, val_loader, device, amp_dtype, config.channels_last, num_classes, dist)
        row.update({f"val_{k}": v for k, v in metrics.items()})
        candidates = [(metrics["top1"], False)]
        if ema is not None:
            ema_metrics = _evaluate_model(ema.module, val_loader, device, amp_dtype, config.channels_last,
                                          num_classes, dist)
            row.update({f"ema_val_{k}": v for k, v in ema_metrics.items()})
            candidates.append((ema_metrics["top1"], True))
        history.append(row)
        top1, is_ema = max(candidates, key=lambda c: c[0])
        improved = top1 > best["top1"]
        if improved:
            best = {"top1": top1, "epoch": epoch + 1, "ema": is_ema}
        if dist.main:
            if improved:
                src = ema.module if is_ema else model
                save_checkpoint(src, out / BEST_FILE, CheckpointMeta(
                    config=src.config, class_names=data.classes, preprocessing=pre,
                    extra={**meta_extra, "epoch": epoch + 1, "val_top1": top1, "ema": is_ema}))
            for k, v in row.items():
                if k != "epoch":
                    writer.add_scalar(k.replace("_", "/", 1) if k.startswith(("train_", "val_")) else k, v,
                                      epoch + 1)
            writer.flush()
            _write_csv(history, out / "metrics.csv")
            log.info("epoch %d/%d: train loss %.4f top-1 %.2f%% | val loss %.4f top-1 %.2f%% top-5 %.2f%%%s | "
                     "%.0f images/s", epoch + 1, config.epochs, row["train_loss"], row["train_top1"],
                     row["val_loss"], row["val_top1"], row["val_top5"],
                     f" | EMA top-1 {row['ema_val_top1']:.2f}%" if ema is not None else "", row["images_per_s"])
        rng = _gather_rng(_rng_state(loader_gen), dist)
        if dist.main:
            payload = {
                "config": json.dumps(config.to_dict()), "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "history": history, "best": best, "rng": rng,
            }
            atomic_write(out / STATE_FILE, lambda tmp: torch.save(payload, tmp))
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.barrier()
    if dist.main:
        writer.close()
        if history:
            _write_curves(history, out / "curves.png")
        log.info("best val top-1 %.2f%% (epoch %d%s) -> %s; %.1fs", best["top1"], best["epoch"],
                 ", EMA weights" if best["ema"] else "", out / BEST_FILE, time.perf_counter() - t_run)
    return TrainResult(out, out / BEST_FILE, best["top1"], best["epoch"], best["ema"], history)


def _gather_rng(state: dict, dist: _Dist) -> list[dict]:
    """Every rank's RNG state (rank order), so a resumed DDP run continues each rank's streams."""
    if dist.world == 1:
        return [state]
    import torch.distributed as tdist

    states = [None] * dist.world
    tdist.all_gather_object(states, state)
    return states


def _train_epoch(config, net, model, ema, loader, optimizer, scheduler, scaler, criterion, device, amp_dtype, dist,
                 epoch) -> dict:
    from tqdm import tqdm

    net.train()
    if config.freeze_backbone:  # a frozen backbone keeps its batch-norm statistics too
        for m in model.modules():
            m.eval()
        for m in _head_modules(model):
            m.train()
        model.dropout.train()
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, hits, count
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
               disable=not (config.progress and dist.main), dynamic_ncols=True)
    t0 = time.perf_counter()
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = net(x)
            loss = criterion(logits.float(), y)
        if not torch.isfinite(loss):
            raise MobileNetsError(f"epoch {epoch + 1}: the loss is {loss.item()} (lower --lr?)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        n = len(y)
        sums += torch.tensor([loss.item() * n, (logits.argmax(1) == y).sum().item(), n], dtype=torch.float64)
        seen = sums[2].item() * dist.world
        bar.set_postfix(loss=f"{sums[0].item() / sums[2].item():.3f}",
                        acc=f"{100 * sums[1].item() / sums[2].item():.1f}%",
                        img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    elapsed = time.perf_counter() - t0
    if dist.world > 1:
        import torch.distributed as tdist

        sums_dev = sums.to(device)
        tdist.all_reduce(sums_dev)
        sums = sums_dev.cpu()
    n = max(sums[2].item(), 1.0)
    return {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": sums[0].item() / n,
            "train_top1": 100 * sums[1].item() / n, "images_per_s": sums[2].item() / elapsed,
            "epoch_s": elapsed}
