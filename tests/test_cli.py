"""The command line: real subprocess runs, output and exit codes."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True, timeout=600)


def test_models_table():
    r = run("models", "--task", "classification")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    v1 = next(l for l in lines if l.startswith("mobilenet_v1 ") and " 224 " in l)
    assert "4.232" in v1 and "568.7" in v1 and "OFF" not in r.stdout
    assert sum(" ok " in f" {l} " for l in lines) >= 38


def test_models_segmentation_rows_and_dense_profile():
    r = run("models", "--task", "segmentation")
    assert r.returncode == 0, r.stderr
    assert "V2 Table 7" in r.stdout and "V3 Tables 7-8" in r.stdout and "OFF" not in r.stdout
    tv = next(l for l in r.stdout.splitlines() if l.startswith("torchvision meta"))
    assert "3.222" in tv and tv.rstrip().endswith("ok")
    r = run("profile", "ssdlite_mobilenet_v3_large", "--resolution", "320", "--num-classes", "91", "--summary")
    assert r.returncode == 0, r.stderr
    assert "613,143,104 MAdds" in r.stdout  # V3 Table 6's V3-Large + SSDLite (0.62B printed; see detection/costs.py)


def test_profile_v1_reproduces_table_2():
    r = run("profile", "mobilenet_v1")
    assert r.returncode == 0, r.stderr
    assert "stages.0.0.conv_dw" in r.stdout
    breakdown = {l.split("  ")[0]: l.split() for l in r.stdout.splitlines()[-4:]}
    assert breakdown["pointwise conv"][-3] == "94.86"
    assert breakdown["depthwise conv"][-3] == "3.06"
    assert breakdown["fully connected"][-3] == "0.18"


def test_unknown_model_is_a_clean_error():
    r = run("profile", "mobilenet_v9")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr and "Traceback" not in r.stderr


def _subparsers():
    import argparse

    from mobilenets.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_help_imports_no_torch():
    """`mobilenets --help` and every `mobilenets COMMAND --help` print their text without importing torch (or
    numpy, or a runtime): the parser is built from torch-free modules, the work is imported by the handler."""
    _, commands = _subparsers()
    code = (
        "import contextlib, io, sys\n"
        "from mobilenets.cli import main\n"
        f"for argv in [['--help']] + [[c, '--help'] for c in {sorted(commands)!r}]:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
        "    assert 'usage: mobilenets' in out.getvalue(), argv\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'onnxruntime', 'executorch') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "heavy: []", r.stdout


def test_every_option_has_help_and_shows_its_default():
    """Each option of each command has a help text; an option with a default shows it (the formatter adds
    "(default: X)"; a help text never repeats one by hand); no reST markup (``x``, :func:) in any help."""
    import argparse
    import re

    from mobilenets.cli.common import HelpFormatter, shows_default

    parser, commands = _subparsers()
    assert not re.search(r"``|:(func|class|mod|meth):", parser.format_help())
    for name, p in commands.items():
        assert p.formatter_class is HelpFormatter, name
        text = p.format_help()
        assert not re.search(r"``|:(func|class|mod|meth):", text), name
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help, f"{name} {a.option_strings or a.dest}: no help"
            if shows_default(a):
                shown = " ".join(map(str, a.default)) if isinstance(a.default, (tuple, list)) else str(a.default)
                assert "default" not in a.help.replace("%(default)", ""), f"{name} {a.dest}: default stated twice"
                line = " ".join(p._get_formatter()._expand_help(a).split())
                assert f"(default: {shown})" in line or shown in line, (name, a.dest, line)
    train = " ".join(commands["train"].format_help().split())
    assert "--epochs EPOCHS passes over the training set (default: 10)" in train
    assert "--crop-scale MIN MAX RandomResizedCrop area range (default: 0.6 1.0)" in train
