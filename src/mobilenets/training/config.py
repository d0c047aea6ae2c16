"""The one typed config of a training job (:class:`TrainConfig`), saved into every checkpoint and run folder.

One dataclass serves the three tasks: the fields every job has (optimisation, schedule, EMA, AMP, data
loading, devices, run folder) and a few that only some tasks read (noted per field). Fields left ``None``
take the task's default when the config is made (:data:`TASK_DEFAULTS`), so a saved config shows what ran.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import MobileNetsError
from ..preprocess import IMAGENET, Preprocessing

__all__ = ["TrainConfig", "TASK_DEFAULTS", "OPTIMIZERS", "AMP_MODES", "AUGMENTS", "DENSE_AUGMENTS", "SCHEDULES",
           "HEADS", "DECODE_MODES"]

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
AMP_MODES = ("auto", "none", "bf16", "fp16")
AUGMENTS = ("none", "randaugment", "trivialaugment")  # classification
DENSE_AUGMENTS = ("full", "light")  # detection / segmentation: the papers' geometric recipe, or flip + colour only
SCHEDULES = ("cosine", "poly")
HEADS = ("paper", "torchvision")
DECODE_MODES = ("auto", "cpu", "device")  # classification: where images are decoded (mobilenets.gpu_data)

# Per-task defaults of the fields left None. Classification: V3-Small on the built-in digits at 64x64 (>= 95% val
# top-1 in about a minute on 2 CPU cores). Detection / segmentation: V3-Small SSDLite / LR-ASPP ("paper" heads)
# on the built-in shapes-over-photos set (mobilenets.shapes) at 160x160, batch 16, light augmentation (the
# generator already varies scale and placement: SSD's zoom-out + IoU crop took 4 epochs to reach AP50 0.23 where
# flip + colour reached 0.34, measured); epochs and lr from learning curves measured on the 2-core CPU to reach
# the issues' targets (val AP50 / mIoU >= 0.7) within 10 minutes (README: detection and segmentation sections;
# benchmarks/dense_default_runs.py).
TASK_DEFAULTS: dict[str, dict] = {
    "classification": dict(model="mobilenet_v3_small", resolution=64, epochs=10, batch_size=64, schedule="cosine"),
    "detection": dict(model="ssdlite_mobilenet_v3_small", resolution=160, epochs=16, batch_size=16, lr=2e-3,
                      schedule="cosine", head="paper"),
    "segmentation": dict(model="lraspp_mobilenet_v3_small", resolution=160, epochs=18, batch_size=16, lr=4e-3,
                         schedule="poly", head="paper"),
}


@dataclass
class TrainConfig:
    """One training run (classification, detection or segmentation: ``task``).

    The defaults train ``mobilenet_v3_small`` on the built-in digits (``data=None``); with
    ``task="detection"`` SSDLite on the built-in shapes set, with ``task="segmentation"`` LR-ASPP on it.
    """

    task: str = "classification"
    data: str | None = None  # classification: ImageFolder root; detection: COCO / VOC root; segmentation: VOC /
    #                          image-mask folders; None: the built-in set (digits, or shapes over photos)
    val_split: float = 0.0  # classification: fraction of each class held out when `data` has no train/ and val/
    samples: int | None = None  # detection / segmentation, built-in shapes set: training samples (None: 2000;
    #                             the 200 val samples stay the same)
    model: str | None = None  # a registered model of the task (None: the task's default)
    width: float = 1.0
    resolution: int | None = None  # input side (classification: train crop; detection/segmentation: square input)
    epochs: int | None = None
    batch_size: int | None = None  # global batch: split over the processes under torchrun
    lr: float | None = None  # None: the task's (detection 2e-3, segmentation 4e-3); classification 4e-3 for adamw,
    #                          0.1 for sgd, 0.016 for rmsprop, scaled by batch_size/64
    opt: str = "adamw"
    momentum: float = 0.9  # sgd and rmsprop
    weight_decay: float | None = None  # None: 0.05 for adamw, 4e-5 otherwise (the V1-V3 papers' value)
    warmup_epochs: float = 1.0  # linear warmup, then the schedule, per step
    schedule: str | None = None  # cosine (to 0) or poly (power 0.9, DeepLab's); None: the task's default
    label_smoothing: float = 0.1  # classification
    ema_decay: float = 0.99  # per optimizer step; 0 turns the EMA off
    augment: str | None = None  # classification: none | randaugment | trivialaugment (default none); detection /
    #                              segmentation: full (SSD's zoom-out + IoU crop, or random scale + crop; with flip
    #                              and colour) | light (flip and colour only); default full, light for the built-in
    #                              shapes set, whose generator already varies scale and placement
    crop_scale: tuple[float, float] = (0.6, 1.0)  # classification: RandomResizedCrop's area range
    hflip: float | None = None  # None: 0.5, but 0 for digits (not mirror symmetric)
    crop_pct: float | None = None  # classification eval centre crop; None: 0.875, but 1.0 for digits
    dropout: float | None = None  # classification: None is the paper's
    drop_path_rate: float = 0.0  # classification, MobileNetV4: stochastic depth, rising linearly to this rate
    #                              (TF Model Garden's MNV4 Conv-M recipe: 0.075)
    head: str | None = None  # detection / segmentation: "paper" (TF reference configs) or "torchvision"
    reduced_tail: bool = False  # detection: halve the last stage (V3 section 6.3, "†")
    amp: str = "auto"  # auto: bf16 (or fp16) on GPUs, none on CPUs; bf16 works on CPUs too, fp16 GPU only
    channels_last: bool = True
    seed: int = 0
    workers: int = 0  # DataLoader worker processes per rank
    threads: int | None = None  # torch intra-op threads; None: torch's default, but 1 for digits (see below)
    device: str = "auto"  # auto: cuda:<local rank> if available, else cpu
    decode_on: str = "auto"  # classification: cpu (PIL in the workers) | device (mobilenets.gpu_data: JPEGs decoded,
    #                          cropped, augmented, normalised on the training device) | auto (device on a GPU with a
    #                          folder of mostly JPEGs, else cpu)
    compile: bool = False  # torch.compile the training step's model
    sync_bn: bool = False  # SyncBatchNorm under torchrun (GPU)
    weights: str | None = None  # classification: fine-tune from these weights (new classifier); detection /
    #                             segmentation: initialise the backbone from classification weights
    freeze_backbone: bool = False  # train the head only
    precise_bn: int = 256  # before each evaluation, recompute the batch-norm statistics (model and EMA) from this
    #                        many training images: a precise-BN pass (train mode, cumulative average, no
    #                        gradient, RNGs untouched); 0: evaluate with the running statistics. See
    #                        training/batchnorm.py and the README's fine-tuning section for what it fixes and costs
    strict: bool = False  # an unreadable image is an error instead of a skipped, counted file
    output: str | None = None  # run folder; None: runs/<model>-<UTC time>
    resume: str | None = None  # a run folder (or its last.pt) to continue; its saved config is used
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        if self.task not in TASK_DEFAULTS:
            raise MobileNetsError(f"task must be one of {', '.join(TASK_DEFAULTS)}, got {self.task!r}")
        # what the caller asked for (fields not at their declared default): what a resumed run must honour
        self._asked = frozenset(f.name for f in fields(self) if getattr(self, f.name) != f.default)
        if self.weights and self.model is None and self.task == "classification":
            self._infer_from_weights()
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.augment is None:
            self.augment = "none" if self.task == "classification" else "light" if self.data is None else "full"
        self.crop_scale = tuple(self.crop_scale)
        self._validate()

    def _validate(self) -> None:
        from ..factory import get_model_entry  # the factory fills the registry

        entry = get_model_entry(self.model)  # unknown names: "did you mean ..."
        if entry.task != self.task:
            raise MobileNetsError(f"{self.model} is a {entry.task} model, not a {self.task} one")

        def finite(*values) -> bool:
            return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)

        checks = [
            (self.opt in OPTIMIZERS, f"opt must be one of {', '.join(OPTIMIZERS)}, got {self.opt!r}"),
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}"),
            (self.augment in self.augments, f"augment must be one of {', '.join(self.augments)} for {self.task}, "
                                             f"got {self.augment!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.head is None or self.head in HEADS, f"head must be one of {', '.join(HEADS)}, got {self.head!r}"),
            (self.head is None or self.task != "classification", "head configures a detector's or segmenter's head"),
            ("head" not in self._asked or not self.model.startswith("deeplabv3"),
             f"head configures the SSDLite and LR-ASPP heads; {self.model} has one head (leave head out)"),
            (not self.freeze_backbone or self.weights or self.resume,
             "freeze backbone keeps the backbone as loaded: pass weights (on a random backbone only the head "
             "would learn)"),
            (isinstance(self.epochs, int) and 1 <= self.epochs <= 100_000, f"epochs must be >= 1, got {self.epochs}"),
            (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65_536,
             f"batch size must be in [1, 65536], got {self.batch_size}"),
            (isinstance(self.resolution, int) and 32 <= self.resolution <= 4096,
             f"resolution must be in [32, 4096], got {self.resolution}"),
            (finite(self.width) and 0 < self.width <= 16, f"width must be in (0, 16], got {self.width}"),
            (finite(self.val_split) and 0.0 <= self.val_split < 1.0, f"val split must be in [0, 1), got {self.val_split}"),
            (finite(self.ema_decay) and 0.0 <= self.ema_decay < 1.0, f"ema decay must be in [0, 1), got {self.ema_decay}"),
            (self.lr is None or (finite(self.lr) and self.lr > 0), f"lr must be positive, got {self.lr}"),
            (finite(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay is None or (finite(self.weight_decay) and self.weight_decay >= 0),
             f"weight decay must be >= 0, got {self.weight_decay}"),
            (finite(self.warmup_epochs) and self.warmup_epochs >= 0, f"warmup epochs must be >= 0, got {self.warmup_epochs}"),
            (finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.hflip is None or (finite(self.hflip) and 0 <= self.hflip <= 1), f"hflip must be in [0, 1], got {self.hflip}"),
            (self.crop_pct is None or (finite(self.crop_pct) and 0 < self.crop_pct <= 1),
             f"crop pct must be in (0, 1], got {self.crop_pct}"),
            (self.dropout is None or (finite(self.dropout) and 0 <= self.dropout <= 1),
             f"dropout must be in [0, 1], got {self.dropout}"),
            (finite(self.drop_path_rate) and 0 <= self.drop_path_rate < 1,
             f"drop path rate must be in [0, 1), got {self.drop_path_rate}"),
            (isinstance(self.workers, int) and 0 <= self.workers <= 256, f"workers must be in [0, 256], got {self.workers}"),
            (self.samples is None or (isinstance(self.samples, int) and 1 <= self.samples <= 10_000_000),
             f"samples must be in [1, 10000000], got {self.samples}"),
            (self.samples is None or (self.data is None and self.task != "classification"),
             "samples sizes the built-in shapes set (detection / segmentation without --data)"),
            (isinstance(self.precise_bn, int) and 0 <= self.precise_bn <= 10_000_000,
             f"precise bn must be a number of images in [0, 10000000], got {self.precise_bn}"),
            (self.threads is None or (isinstance(self.threads, int) and 1 <= self.threads <= 1024),
             f"threads must be in [1, 1024], got {self.threads}"),
            (self.decode_on in DECODE_MODES, f"decode on must be one of {', '.join(DECODE_MODES)}, got "
                                             f"{self.decode_on!r}"),
            (self.decode_on != "device" or self.task == "classification",
             f"decode on device is for classification; {self.task} decodes on the CPU"),
            (isinstance(self.compile, bool), f"compile must be True or False, got {self.compile!r}"),
            (isinstance(self.seed, int) and self.seed >= 0, f"seed must be a non-negative integer, got {self.seed}"),
            (len(self.crop_scale) == 2 and finite(*self.crop_scale) and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
             f"crop scale must be 0 < min <= max <= 1, got {self.crop_scale}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MobileNetsError(msg)
        try:  # the evaluation preprocessing the run will save (e.g. a large resolution with a small crop pct)
            self.preprocessing()
        except MobileNetsError as e:
            raise MobileNetsError(f"resolution {self.resolution} with crop pct {self.eval_crop_pct:g}: {e}") from None

    def _infer_from_weights(self) -> None:
        """Model (and width, unless given) from the fine-tuning weights when no model is given, as the other
        commands infer them (the TF options come from the file when the model is built)."""
        from ..weights import inspect_weights

        info = inspect_weights(self.weights)
        self.model = info.model
        if "width" not in self._asked:
            self.width = info.width

    @property
    def asked(self) -> frozenset[str]:
        """The fields given at construction with other values than their declared defaults."""
        return self._asked

    @property
    def augments(self) -> tuple[str, ...]:
        return AUGMENTS if self.task == "classification" else DENSE_AUGMENTS

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
        builtin_digits = self.data is None and self.task == "classification"
        return self.hflip if self.hflip is not None else (0.0 if builtin_digits else 0.5)

    @property
    def eval_crop_pct(self) -> float:
        return self.crop_pct if self.crop_pct is not None else (1.0 if self.data is None else 0.875)

    @property
    def num_threads(self) -> int | None:
        # On the built-in sets one thread: the 64x64 digits net gains nothing from a second thread, and a second
        # thread is 10-30x slower when another process holds a core (measured on 2 cores with one busy: 470
        # images/s on 1 thread, 17-42 on 2; SSDLite-V3-Small at 160: 65 images/s on 1 thread, under 10 on 2).
        return self.threads if self.threads is not None else (1 if self.data is None else None)

    def preprocessing(self, base: Preprocessing = IMAGENET) -> Preprocessing:
        """How evaluation images are prepared (saved with the weights); mean/std are ``base``'s (the
        pretrained weights' when fine-tuning). Detection and segmentation resize whole images to
        ``resolution`` x ``resolution`` (crop = resize)."""
        if self.task != "classification":
            return Preprocessing(self.resolution, self.resolution, base.mean, base.std)
        return Preprocessing(self.resolution, round(self.resolution / self.eval_crop_pct), base.mean, base.std)
