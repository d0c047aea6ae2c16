"""What the subcommands share: the plain-text table, argument types that check ranges up front, logging."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

__all__ = ["format_table", "mark", "setup_logging", "int_range", "float_range", "model_name", "output_path",
           "add_weights_options", "add_refresh", "describe"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain-text table; ``align`` has one 'l' or 'r' per column (default: first left, rest right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, cells)])


def mark(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "OFF")


def _ranged(cast: Callable, lo, hi, lo_open: bool, what: str):
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or (lo is not None and (value <= lo if lo_open else value < lo)) or (
                hi is not None and value > hi):
            bounds = (f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else "") + (
                f"{' and ' if lo is not None else ''}<= {hi:g}" if hi is not None else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {bounds})")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def int_range(lo: int | None = None, hi: int | None = None):
    """An argparse type: an integer in [lo, hi]."""
    return _ranged(int, lo, hi, False, "an integer")


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """An argparse type: a finite float in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    def finite(text: str) -> float:
        v = float(text)
        if v in (float("inf"), float("-inf")):
            raise ValueError(text)
        return v

    return _ranged(finite, lo, hi, lo_open, "a number")


def model_name(task: str | None = "classification"):
    """An argparse type: a registered model name of ``task``; a misspelt one is refused with the close names
    ("did you mean mobilenet_v3_small?")."""
    def parse(text: str) -> str:
        from ..errors import MobileNetsError
        from ..registry import get_model_entry, list_models

        try:
            entry = get_model_entry(text)
        except MobileNetsError as e:
            raise argparse.ArgumentTypeError(f"invalid choice: {e}") from None
        if entry.name not in list_models(task):
            raise argparse.ArgumentTypeError(f"invalid choice: {text} is a {entry.task} model; choose from "
                                             f"{', '.join(list_models(task))}")
        return text

    parse.__name__ = "model name"
    return parse


def output_path(what: str = "output file"):
    """An argparse type: a path a file can be written to (not a folder, no parent that is a file), checked
    before any work starts."""
    def parse(text: str) -> str:
        from ..errors import MobileNetsError, output_file

        try:
            output_file(text, what)
        except MobileNetsError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    parse.__name__ = "output path"
    return parse


def setup_logging() -> None:
    """Library log lines (``mobilenets`` logger) to stdout, bare, at INFO."""
    import logging

    class CurrentStdout(logging.StreamHandler):
        """Writes to whatever ``sys.stdout`` is when a line is logged (not the one at set-up: ``main()`` called
        in-process, e.g. under pytest's capture, would otherwise keep writing to a closed stream)."""

        @property
        def stream(self):
            return sys.stdout

        @stream.setter
        def stream(self, _value) -> None:
            pass

    log = logging.getLogger("mobilenets")
    if not log.handlers:
        h = CurrentStdout()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False


def add_weights_options(p: argparse.ArgumentParser) -> None:
    from ..registry import list_models

    p.add_argument("--model", type=model_name(), metavar="NAME",
                   help=f"the architecture: {', '.join(list_models())} (default: inferred from the file)")
    p.add_argument("--width", type=float_range(0, 4, lo_open=True),
                   help="the width multiplier (default: inferred from the file)")
    p.add_argument("--tf", action="store_true", default=None,
                   help="the weights were trained in TensorFlow (timm tf_* files): TF padding, BN eps 1e-3, "
                        "[-1, 1] inputs; automatic for Keras and TFLite files")


def add_refresh(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refresh", action="store_true",
                   help="download a weights URL again even if it is in the cache")


def describe(info) -> str:
    """One line on what a weights file holds (:class:`~mobilenets.weights.WeightsInfo`)."""
    pre = "[-1, 1]" if info.preprocessing.mean == (0.5, 0.5, 0.5) else "ImageNet mean/std"
    classes = f"{info.file_classes} classes" + (" (index 0 = background)" if info.background else "")
    stem = ", fixed stem" if getattr(info, "fixed_stem", False) else ""
    return (f"{info.format} weights: {info.model} width {info.width:g}{stem}, {classes}, "
            f"tf_padding={info.tf_padding}, bn_eps={info.bn_eps:g}, inputs {pre}, "
            f"{info.preprocessing.crop}x{info.preprocessing.crop}")
