"""The mobilenets command: a thin layer over the library, one library call per subcommand.

Each module here adds its subcommands (``add_commands(subparsers)``); a handler turns its arguments into plain
values (or a config dataclass) and calls one library function. User errors
(:class:`~mobilenets.errors.MobileNetsError`, missing files, bad arguments) become a one-line message (control
characters escaped) and exit 2.

- ``models.py``: ``models``, ``profile`` (cost accounting)
- ``weights.py``: ``inspect``, ``convert``, ``predict`` (weights from any ecosystem)
- ``deploy.py``: ``export``, ``bench``
- ``train.py``: ``train``, ``train-detection``, ``train-segmentation`` (one loop), ``eval`` (any checkpoint)
- ``detection.py``: ``detect``; ``segmentation.py``: ``segment``
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..errors import MobileNetsError, one_line
from . import deploy, detection, models, segmentation, train, weights
from .common import HelpFormatter, add_verbose, format_table, quiet_third_party, warnings_to_stderr

__all__ = ["main", "build_parser", "format_table"]

_GROUPS = (models, weights, train, detection, segmentation, deploy)


class _Parser(argparse.ArgumentParser):
    """argparse with the library's error format: one line, ``mobilenets <command>: error: ...``, exit 2
    (``--help`` shows the usage). Every subcommand's parser shows option defaults (:class:`HelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="mobilenets", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    add_verbose(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.add_commands(sub)
    for command in sub.choices.values():
        add_verbose(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings_to_stderr()  # (train replaces it with its progress lines on stdout)
    try:
        with quiet_third_party(args.verbose, native=getattr(args, "native_output", False)):
            return int(args.handler(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MobileNetsError as e:
        print(f"mobilenets {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no: missing, read-only, full, permissions
        where = f"{e.filename}: " if e.filename else ""
        print(f"mobilenets {args.command}: error: {one_line(where + (e.strerror or str(e)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mobilenets {args.command}: interrupted", file=sys.stderr)
        return 130
