"""The device-side input pipeline of classification training (``TrainConfig.decode_on = "device"``): DataLoader
workers only read files; the training device decodes the JPEGs of a whole batch at once
(``torchvision.io.decode_jpeg(list, device=...)``, nvJPEG on a GPU), crops / flips / augments each image as uint8
with the same transforms v2 the CPU pipeline uses, stacks them and converts and normalises the batch there.

Why: on a GPU the CPU pipeline (PIL decode, crop, augment and normalise in worker processes, float32 batches
copied to the GPU) sets the pace of training (issue 14: ~1,000 images/s against a model-alone rate of ~7,500 for
V3-Large at 224 on an H100). Here the workers' work is ``open().read()``; what moves between processes and to the
device is the compressed file; the arithmetic runs on the device.

On a CPU device the same code runs on the CPU, and its results are the CPU pipeline's: the same transform objects
in the same order on the same uint8 tensors, with the random draws in the same order (with ``workers=0``, a run
is identical to ``decode_on="cpu"`` on PNG folders, where both decoders are exact; JPEG decoders may differ by a
rounding). Decoding falls back per image: nvJPEG -> torchvision's CPU decoders -> PIL (BMP, TIFF, CMYK JPEGs...);
an image none can read is skipped and counted (a warning names it) or, ``strict``, a one-line
:class:`~mobilenets.errors.MobileNetsError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from .errors import MobileNetsError
from .training.config import DECODE_MODES

__all__ = ["DECODE_MODES", "resolve_decode", "EncodedImages", "DevicePipeline", "DeviceBatches", "device_feed",
           "decode_images"]

log = logging.getLogger("mobilenets")

_JPEG_SUFFIXES = (".jpg", ".jpeg")


@contextlib.contextmanager
def _quiet():
    """torchvision 0.29 deprecates its decoders in favour of TorchCodec (not a dependency here): the warning is
    noise on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TorchCodec.*")
        yield


def resolve_decode(mode: str, *, task: str, data: str | None, device: torch.device, samples=None) -> str:
    """``cpu`` or ``device``. ``auto`` is ``device`` on a CUDA device for classification on an image folder whose
    training files are mostly JPEGs, ``cpu`` otherwise (on a CPU the two do the same work; PNGs gain nothing
    from the device)."""
    if mode not in DECODE_MODES:
        raise MobileNetsError(f"decode_on must be one of {', '.join(DECODE_MODES)}, got {mode!r}")
    if task != "classification":
        if mode == "device":
            raise MobileNetsError(f"decode_on device is for classification; {task} decodes on the CPU")
        return "cpu"
    if mode != "auto":
        return mode
    if device.type != "cuda" or data is None or not samples:
        return "cpu"
    jpegs = sum(str(p).lower().endswith(_JPEG_SUFFIXES) for p, _ in samples)
    return "device" if 2 * jpegs > len(samples) else "cpu"


class EncodedImages(Dataset):
    """Items ``(image, class index, item index)``: ``image`` is a file's bytes as a 1-D uint8 tensor (image
    files), or an already decoded (3, H, W) uint8 tensor (the built-in digits, which live in memory)."""

    def __init__(self, source) -> None:
        from .data import ImageFiles

        self.source = source
        self.files = isinstance(source, ImageFiles)
        if not self.files and not hasattr(source, "image"):
            raise MobileNetsError(f"decode_on device reads image folders or the built-in digits, not "
                                  f"{type(source).__name__}")

    def __len__(self) -> int:
        return len(self.source)

    def name(self, i: int) -> str:
        return self.source.samples[i][0] if self.files else f"digits image {i}"

    def __getitem__(self, i: int):
        if not self.files:
            from torchvision.transforms.v2.functional import pil_to_tensor

            return pil_to_tensor(self.source.image(i)), int(self.source.targets[i]), i
        path, target = self.source.samples[i]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MobileNetsError(f"{path}: unreadable image ({type(e).__name__}: {e.strerror or e})") from None
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), target, i


def _collate(items):
    """A batch as four tensors: the files' bytes end to end and their lengths (or, for decoded images, the
    stacked images and None), targets, item indices. A few large tensors cross from a worker process, not one per
    image (each tensor sent between processes costs a shared-memory file and its handle)."""
    images, targets, index = zip(*items)
    if all(t.dim() == 1 for t in images):
        payload, lengths = torch.cat(images), torch.tensor([len(t) for t in images], dtype=torch.int64)
    else:
        payload, lengths = torch.stack(images), None
    return payload, lengths, torch.tensor(targets, dtype=torch.int64), torch.tensor(index, dtype=torch.int64)


def _unpack(payload: torch.Tensor, lengths: torch.Tensor | None) -> list[torch.Tensor]:
    return list(torch.split(payload, lengths.tolist())) if lengths is not None else list(payload.unbind(0))


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.dim() == 1 and data.numel() > 3 and data[0].item() == 0xFF and data[1].item() == 0xD8


def _decode_cpu(data: torch.Tensor) -> torch.Tensor:
    """One image's bytes -> (3, H, W) uint8 on the CPU: torchvision's decoders (JPEG, PNG, GIF, WebP...), else PIL
    (BMP, TIFF, CMYK JPEGs...); a ValueError with PIL's reason if neither reads it."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        with _quiet():
            image = decode_image(data, mode=ImageReadMode.RGB)
        if image.dtype == torch.uint16:  # a 16-bit PNG: to 8 bits, as data.to_rgb does for PIL
            image = (image.to(torch.int32) // 257).to(torch.uint8)
        return image
    except RuntimeError:
        pass
    from PIL import Image

    from .data import BAD_IMAGE, image_problem, to_rgb

    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            img = to_rgb(im)
    except BAD_IMAGE as e:
        raise ValueError(image_problem(e)) from None
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(img)


def decode_images(batch: list[torch.Tensor], device: torch.device, names: list[str], *,
                  strict: bool = False) -> list[torch.Tensor | None]:
    """Each item of ``batch`` (file bytes, or an already decoded (3, H, W) uint8 tensor) as a (3, H, W) uint8
    tensor on ``device``; the JPEGs in one batched ``decode_jpeg`` call on the device. An image no decoder reads
    is None (and a warning), or with ``strict`` a :class:`MobileNetsError` naming it (``names[i]``)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [None] * len(batch)
    jpegs = [i for i, t in enumerate(batch) if _is_jpeg(t)]
    if jpegs:
        try:
            with _quiet():
                decoded = decode_jpeg([batch[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, img in zip(jpegs, decoded):
                out[i] = img
        except RuntimeError:  # one bad (or, for nvJPEG, unsupported) file fails the call: each on its own below
            pass
    for i, t in enumerate(batch):
        if out[i] is not None:
            continue
        if t.dim() == 3:
            out[i] = t.to(device, non_blocking=True)
            continue
        try:
            out[i] = _decode_cpu(t).to(device, non_blocking=True)
        except ValueError as e:
            if strict:
                raise MobileNetsError(f"{names[i]}: unreadable image ({e})") from None
            log.warning("skipping unreadable image %s (%s)", names[i], e)
    return out


class CropFlip:
    """RandomResizedCrop + RandomHorizontalFlip of a list of uint8 images of any sizes into one uint8 batch, with
    the random numbers drawn exactly as those transforms v2 objects draw them (the same crops and flips for the same
    seed) but without their per-image Python machinery (~300-500 us per image on this CPU, more than a GPU step
    per image): per image one crop view and one ``interpolate``; flips, rounding and the uint8 cast on the batch.
    The resize is torchvision's own for uint8 images on a GPU (float, antialiased bilinear, rounded); on a CPU
    torchvision resizes uint8 with a fixed-point kernel that can differ by one level."""

    def __init__(self, crop, flip) -> None:
        self.crop, self.flip = crop, flip  # the transforms v2 objects whose draws this repeats
        self._params = getattr(crop, "make_params", None) or crop._get_params  # torchvision < 0.21: _get_params

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        from torch.nn.functional import interpolate

        size = list(self.crop.size)
        out, flips = [], []
        for img in images:
            p = self._params([img])
            if self.flip is not None:  # RandomHorizontalFlip.forward: flip unless rand >= p
                flips.append(not bool(torch.rand(1) >= self.flip.p))
            crop = img[None, :, p["top"]:p["top"] + p["height"], p["left"]:p["left"] + p["width"]].float()
            out.append(crop if [p["height"], p["width"]] == size else
                       interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=True))
        batch = torch.cat(out).round_().clamp_(0, 255).to(torch.uint8)
        if any(flips):
            idx = torch.tensor([i for i, f in enumerate(flips) if f], device=batch.device)
            batch[idx] = batch[idx].flip(-1)
        return batch


@dataclass
class DevicePipeline:
    """What happens to decoded uint8 images on the device: ``per_image`` (crop, flip, augment: per image, as the
    CPU pipeline does) then ``per_batch`` (to float and normalise, on the stacked batch); or, instead of
    ``per_image``, ``batched`` (a :class:`CropFlip` of the whole list)."""

    per_image: object
    per_batch: object
    batched: object = None

    @classmethod
    def train(cls, resolution: int, *, mean, std, crop_scale, hflip: float, augment: str,
              batched: bool = False) -> "DevicePipeline":
        """:func:`mobilenets.data.train_transform`'s steps, split at the uint8 -> float boundary. ``batched``
        (without RandAugment / TrivialAugment): crop and flip by :class:`CropFlip`."""
        from torchvision.transforms import v2

        from .data import train_transform

        ops = train_transform(resolution, mean=mean, std=std, crop_scale=crop_scale, hflip=hflip,
                              augment=augment).transforms
        pipe = cls._split(ops, v2)
        steps = pipe.per_image.transforms
        if batched and isinstance(steps[0], v2.RandomResizedCrop) and len(steps) <= 2 and all(
                isinstance(op, v2.RandomHorizontalFlip) for op in steps[1:]):
            pipe.batched = CropFlip(steps[0], steps[1] if len(steps) == 2 else None)
        return pipe

    @classmethod
    def eval(cls, preprocessing) -> "DevicePipeline":
        """:meth:`mobilenets.preprocess.Preprocessing.transform`'s steps, split the same way."""
        from torchvision.transforms import v2

        return cls._split(preprocessing.transform().transforms, v2)

    @classmethod
    def _split(cls, ops, v2) -> "DevicePipeline":
        assert isinstance(ops[0], v2.ToImage), ops  # the input here is already a uint8 tensor image
        k = next(i for i, op in enumerate(ops) if isinstance(op, v2.ToDtype))
        return cls(v2.Compose(ops[1:k]), v2.Compose(ops[k:]))

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        if self.batched is not None:
            return self.per_batch(self.batched(images))
        # plain tensors: transforms v2 treats a lone tensor as an image; wrapping each in tv_tensors.Image cost
        # ~85 us more per image (measured on this CPU: 490 vs 400 us for crop + flip), all of it Python
        return self.per_batch(torch.stack([self.per_image(img) for img in images]))


class DeviceBatches:
    """A DataLoader over :class:`EncodedImages`, yielding ``(float images, targets)`` on ``device``: decoded,
    transformed and normalised there. Unreadable images are left out of their batch (counted in ``skipped``).

    ``prefetch`` (default: on a CUDA device) prepares the next batches in a background thread on its own CUDA
    stream while the training step runs: the training loop waits for the GPU every step (``loss.item()``), and
    the GIL is free while it waits, so decoding and augmenting batch k+1 overlaps the step of batch k. The
    thread's random draws (crops, flips) then interleave with the loop's (dropout) in no fixed order: a run is
    not bit-reproducible (on a GPU it is not anyway); without the thread it is."""

    def __init__(self, loader, dataset: EncodedImages, pipeline: DevicePipeline, device: torch.device, *,
                 strict: bool = False, prefetch: bool | None = None, depth: int = 2) -> None:
        self.loader, self.dataset, self.pipeline, self.device, self.strict = loader, dataset, pipeline, device, strict
        self.prefetch = device.type == "cuda" if prefetch is None else prefetch
        self.depth = depth
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.loader)

    def _prepare(self, payload, lengths, targets, index):
        decoded = decode_images(_unpack(payload, lengths), self.device, [self.dataset.name(i) for i in index.tolist()],
                                strict=self.strict)
        keep = [i for i, img in enumerate(decoded) if img is not None]
        if len(keep) < len(decoded):
            self.skipped += len(decoded) - len(keep)
            targets = targets[keep]
        if not keep:
            return None
        return self.pipeline([decoded[i] for i in keep]), targets.to(self.device, non_blocking=True)

    def __iter__(self):
        if not self.prefetch:
            for batch in self.loader:
                prepared = self._prepare(*batch)
                if prepared is not None:
                    yield prepared
            return
        yield from self._prefetched()

    def _prefetched(self):
        import queue
        import threading

        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        q: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()
        done = object()

        def work():
            try:
                ctx = torch.cuda.stream(stream) if cuda else contextlib.nullcontext()
                with ctx:
                    for batch in self.loader:
                        if stop.is_set():
                            return
                        prepared = self._prepare(*batch)
                        if prepared is None:
                            continue
                        event = None
                        if cuda:
                            event = torch.cuda.Event()
                            event.record(stream)
                        q.put((prepared, event))
                q.put((done, None))
            except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                q.put((e, None))

        thread = threading.Thread(target=work, daemon=True, name="mobilenets-prefetch")
        thread.start()
        try:
            while True:
                item, event = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                if event is not None:  # the step's stream waits for the batch; the allocator learns who uses it
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for t in item:
                        t.record_stream(current)
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.01)


@dataclass
class DeviceFeed:
    """The datasets a DataLoader reads in ``decode_on="device"`` mode and how to wrap its loaders."""

    train: EncodedImages
    val: EncodedImages
    train_pipeline: DevicePipeline
    val_pipeline: DevicePipeline
    device: torch.device
    strict: bool
    collate = staticmethod(_collate)

    def loader_options(self, workers: int) -> dict:
        """Pinned batches on a GPU; workers kept between epochs and four batches ahead."""
        opts = {"pin_memory": self.device.type == "cuda"}
        if workers > 0:
            opts.update(persistent_workers=True, prefetch_factor=4)
        return opts

    def wrap(self, loader, train: bool) -> DeviceBatches:
        return DeviceBatches(loader, self.train if train else self.val,
                             self.train_pipeline if train else self.val_pipeline, self.device, strict=self.strict)


def device_feed(config, preprocessing, data, device: torch.device) -> DeviceFeed | None:
    """The device-side feed of a training run's ``data`` (:class:`~mobilenets.tasks.TaskData`), or None when the
    run decodes on the CPU (``config.decode_on`` resolved by :func:`resolve_decode`)."""
    samples = getattr(data.train, "samples", None)
    mode = resolve_decode(config.decode_on, task=config.task, data=config.data, device=device, samples=samples)
    if mode == "cpu":
        return None
    pre = preprocessing
    # on a GPU crops and flips go through CropFlip (torchvision's GPU resize, v2's random draws, a fraction of the
    # Python); on a CPU through the transforms themselves, so that a run there is the CPU pipeline's, bit for bit
    train = DevicePipeline.train(config.resolution, mean=pre.mean, std=pre.std, crop_scale=config.crop_scale,
                                 hflip=config.flip_p, augment=config.augment, batched=device.type == "cuda")
    return DeviceFeed(EncodedImages(data.train), EncodedImages(data.val), train, DevicePipeline.eval(pre), device,
                      config.strict)
