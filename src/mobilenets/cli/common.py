"""What the subcommands share: the plain-text table, argument types that check ranges up front, logging."""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import sys
from typing import Callable, Sequence

from ..errors import printable_records

__all__ = ["format_table", "mark", "setup_logging", "warnings_to_stderr", "int_range", "float_range", "model_name",
           "output_path", "add_weights_options", "add_refresh", "describe", "model_names",
           "HelpFormatter", "shows_default", "quiet_third_party", "add_verbose"]


def shows_default(action: argparse.Action) -> bool:
    """Whether ``--help`` states the option's default: an option taking a value, whose default is not None
    (a None default is described in words: "default: inferred from the file")."""
    return bool(action.option_strings) and action.nargs != 0 and action.default is not None \
        and action.default is not argparse.SUPPRESS


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout, with "(default: X)" after every option that has a default (:func:`shows_default`)
    unless its help places ``%(default)s`` itself; a list default is shown as the command line takes it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        if shows_default(action) and "%(default)" not in help_:
            help_ += " (default: %(default)s)"
        return help_

    def _expand_help(self, action: argparse.Action) -> str:
        if isinstance(action.default, (tuple, list)):
            action = copy.copy(action)
            action.default = " ".join(map(str, action.default))
        return super()._expand_help(action)


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


# Third-party chatter the export, bench and weights paths set off, and the switch each library offers for it:
# set before a handler imports them (unless the user set them), all but errors hidden unless -v.
QUIET_ENV = {
    "LITERT_TORCH_SHOW_PROGRESS": "n",  # litert-torch's "(00:10) [START] LiteRT-Torch Convert > ..." lines
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow / LiteRT C++ INFO and WARNING lines ("I0000 ... flatbuffer_export.cc")
    "GLOG_minloglevel": "2",  # the same from libraries logging through glog
}
QUIET_LOGGERS = ("litert_torch", "ai_edge_litert", "executorch", "torchao", "torch", "onnxscript", "onnx_ir", "absl",
                 "tensorflow")


@contextlib.contextmanager
def quiet_third_party(verbose: bool, *, native: bool = False):
    """Around a command, unless ``verbose`` (``-v``): the environment switches above, the libraries' loggers
    at ERROR, and Python warnings shown only when this package raised them (a mismatched-options warning on
    loading weights) - not the deprecation and tracing notices torch, onnxscript or executorch raise while
    exporting. Loggers and the warning display are restored afterwards.

    ``native`` (the commands that load the export runtimes: export, bench): those write to the process's
    standard error themselves (TensorFlow Lite's "INFO: Created TensorFlow Lite XNNPACK delegate", absl's
    "I0000 ... port.cc", ExecuTorch's "[cpuinfo_utils.cpp:71] ..." through Python's stream, torch's log
    handlers): file descriptor 2 and ``sys.stderr`` go to a temporary file for the command, this package's
    warnings to the real stream. The captured text is shown if the command fails with something other than a
    :class:`~mobilenets.errors.MobileNetsError`."""
    if verbose:
        yield
        return
    import logging
    import os
    import warnings

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    show = warnings.showwarning
    try:
        with _native_stderr_captured() if native else contextlib.nullcontext(sys.stderr) as real_stderr:
            warnings.showwarning = _own_warnings_only(show, real_stderr)
            yield
    finally:
        warnings.showwarning = show
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _native_stderr_captured():
    """File descriptor 2 and ``sys.stderr`` into one temporary file for the block; yields a stream on the real
    standard error."""
    import io
    import os
    import tempfile

    from ..errors import MobileNetsError

    stderr = sys.stderr
    if stderr is not None:
        stderr.flush()
    real = os.dup(2)
    captured = tempfile.TemporaryFile()
    os.dup2(captured.fileno(), 2)

    def stream(fd: int) -> io.TextIOWrapper:
        return io.TextIOWrapper(os.fdopen(os.dup(fd), "wb", buffering=0), encoding="utf-8",
                                errors="backslashreplace", line_buffering=True)

    sys.stderr, real_stream = stream(2), stream(real)
    try:
        yield real_stream
    except (MobileNetsError, KeyboardInterrupt):
        raise
    except BaseException:  # a crash, not a user error: what the libraries said may explain it
        sys.stderr.flush()
        captured.seek(0)
        os.write(real, captured.read()[-20_000:])
        raise
    finally:
        for s in (sys.stderr, real_stream):
            s.flush()
            s.close()
        sys.stderr = stderr
        os.dup2(real, 2)
        os.close(real)
        captured.close()


def _own_warnings_only(show, stream):
    """``warnings.showwarning`` that shows a warning only when code of this package called ``warnings.warn``
    (found on the stack: the first frame outside the warnings module; a warning's own filename is where its
    ``stacklevel`` points, often our code for a library's warning), on ``stream``."""
    import os
    import warnings

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    skip = {os.path.abspath(warnings.__file__)}

    def showwarning(message, category, filename, lineno, file=None, line=None):
        frame = sys._getframe(1)
        while frame is not None and os.path.abspath(frame.f_code.co_filename) in skip:
            frame = frame.f_back
        if frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
            show(message, category, filename, lineno, file or stream, line)

    return showwarning


class _CurrentStream(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is when a line is logged (not the one at set-up:
    ``main()`` called in-process, e.g. under pytest's capture, would otherwise keep writing to a closed stream),
    the bare message with its control characters escaped (:func:`mobilenets.errors.printable_records`)."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__()
        self.name_of_stream = name
        self.setLevel(level)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(printable_records)

    @property
    def stream(self):
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, _value) -> None:
        pass


def warnings_to_stderr() -> None:
    """Library warnings (``mobilenets`` logger) to stderr, escaped, for commands that set up nothing else (what
    Python's last-resort handler did, without escaping)."""
    log = logging.getLogger("mobilenets")
    if not log.handlers:
        log.addHandler(_CurrentStream("stderr", logging.WARNING))


def setup_logging() -> None:
    """Library log lines (``mobilenets`` logger) to stdout, bare, at INFO (a training run's progress)."""
    log = logging.getLogger("mobilenets")
    if not any(isinstance(h, _CurrentStream) and h.name_of_stream == "stdout" for h in log.handlers):
        for h in [h for h in log.handlers if isinstance(h, _CurrentStream)]:
            log.removeHandler(h)  # the warnings-only one: its lines now go here
        log.addHandler(_CurrentStream("stdout", logging.INFO))
        log.setLevel(logging.INFO)
        log.propagate = False


def model_names(task: str | None = "classification") -> str:
    """The built-in model names of ``task`` (None: every task), for help texts: from the registry's static
    list, so that ``--help`` imports no model code (and no torch)."""
    from ..registry import BUILTIN_MODELS

    return ", ".join(n for t, names in BUILTIN_MODELS.items() if task in (None, t) for n in names)


def add_weights_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=model_name(), metavar="NAME",
                   help=f"the architecture: {model_names()} (default: inferred from the file)")
    p.add_argument("--width", type=float_range(0, 4, lo_open=True),
                   help="the width multiplier (default: inferred from the file)")
    p.add_argument("--tf", action="store_true", default=None,
                   help="the weights were trained in TensorFlow (timm tf_* files): TF padding, BN eps 1e-3, "
                        "[-1, 1] inputs; automatic for Keras and TFLite files")


def add_verbose(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v`` / ``--verbose``: on the top-level parser, and on each command (where it must not reset the
    top-level value: its default is SUPPRESS)."""
    p.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="show the messages of the libraries doing the work (litert-torch, ExecuTorch, ONNX, "
                        "TensorFlow Lite, torch warnings); hidden by default")


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
