"""The command line: real subprocess runs, output and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import cli


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
        "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'onnxruntime', 'executorch')\n"
        "               if m in sys.modules)\n"
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


def test_builtin_model_names_match_the_registry():
    """The static names --help lists (registry.BUILTIN_MODELS, read without importing torch) are exactly the
    registered models, task by task, in registration order: a new model must be added there too."""
    from mobilenets.registry import BUILTIN_MODELS, list_models

    for task, names in BUILTIN_MODELS.items():
        assert list(names) == list_models(task), f"update registry.BUILTIN_MODELS[{task!r}]"
    assert sum(map(len, BUILTIN_MODELS.values())) == len(list_models(None))


# ------------------------------------------------------------------------- in-process runs, small files


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"mobilenets {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A width-0.25 V1 checkpoint with 4 classes, a photo-sized PNG and a text file."""
    import numpy as np
    from PIL import Image

    from mobilenets import create_model, save_checkpoint

    d = tmp_path_factory.mktemp("small")
    model = create_model("mobilenet_v1", width=0.25, num_classes=4)
    save_checkpoint(model, d / "ck.safetensors")
    import torch

    torch.save(model.state_dict(), d / "state.pth")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(d / "img.png")
    (d / "notes.txt").write_text("not an image\n")
    return d


def test_predict_goes_on_past_a_bad_image(small, capsys):
    """One unreadable image among good ones: the good ones are classified and printed, the bad one is one
    line on stderr naming it, and the exit status is 1 (2 stays for usage / weights errors)."""
    rc, out, err = cli(capsys, "predict", "--weights", small / "ck.safetensors", small / "notes.txt",
                       small / "img.png", "--top", "2")
    assert rc == 1, err
    line = one_error_line(err, "predict")
    assert "notes.txt" in line and "not a readable image" in line
    lines = out.splitlines()
    assert len(lines) == 3 and lines[0].endswith("img.png") and all(l.startswith("  ") for l in lines[1:])
    rc, out, err = cli(capsys, "predict", "--weights", small / "ck.safetensors", small / "img.png")
    assert rc == 0 and not err and len(out.splitlines()) == 5


def test_predict_library_strict_and_lenient(small):
    from mobilenets.errors import MobileNetsError
    from mobilenets.predict import predict

    with pytest.raises(MobileNetsError, match="notes.txt"):
        predict(small / "ck.safetensors", [small / "img.png", small / "notes.txt"])
    got = predict(small / "ck.safetensors", [small / "img.png", small / "notes.txt"], strict=False)
    assert [bool(p.top) for p in got] == [True, False]
    assert got[0].error is None and "notes.txt" in got[1].error


def test_convert_refuses_a_suffix_it_does_not_write(small, tmp_path, capsys):
    rc, _, err = cli(capsys, "convert", small / "state.pth", tmp_path / "out.pth")
    line = one_error_line(err, "convert")
    assert rc == 2 and "safetensors" in line and "out.safetensors" in line
    assert not (tmp_path / "out.pth").exists()
    rc, out, err = cli(capsys, "convert", small / "state.pth", tmp_path / "out.safetensors")
    assert rc == 0, err
    from mobilenets.checkpoint import read_checkpoint

    assert read_checkpoint(tmp_path / "out.safetensors")[1].config.name == "mobilenet_v1"


def _onnx_file(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))


def test_eval_names_what_a_non_checkpoint_file_is(small, tmp_path, capsys):
    """eval on a file that is not a mobilenets checkpoint: one line naming its real format and what to do."""
    import warnings

    import torch

    _onnx_file(tmp_path / "m.onnx")
    # an ExecuTorch program's FlatBuffer head: root offset, then the file identifier "ET12"
    (tmp_path / "m.pte").write_bytes(b"\x3c\x00\x00\x00ET12" + bytes(120))
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; users still have such files
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(torch.nn.Linear(3, 2), torch.zeros(1, 3)), str(tmp_path / "m.pt"))
    cases = {tmp_path / "m.onnx": "an exported ONNX model", tmp_path / "m.pte": "an exported ExecuTorch model",
             tmp_path / "m.pt": "an exported TorchScript model",
             small / "state.pth": "mobilenets convert state.pth state.safetensors"}
    for path, needle in cases.items():
        rc, _, err = cli(capsys, "eval", "--weights", path)
        line = one_error_line(err, "eval")
        assert rc == 2 and needle in line and "not a mobilenets checkpoint" in line, line
    from mobilenets.weights.formats import exported_model_kind

    assert exported_model_kind(small / "ck.safetensors") is None and exported_model_kind(small / "state.pth") is None


def test_outputs_follow_the_umask(small, tmp_path):
    """Checkpoints, exports and pictures get the mode open() gives under the umask (0644 under 022, 0640
    under 027), not mkstemp's 0600."""
    import os

    from mobilenets import create_model, save_checkpoint
    from mobilenets.checkpoint import atomic_write
    from mobilenets.export import export_model

    model = create_model("mobilenet_v1", width=0.25, num_classes=4)
    old = os.umask(0o022)
    try:
        for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
            os.umask(umask)
            d = tmp_path / oct(umask)
            save_checkpoint(model, d / "ck.safetensors")
            atomic_write(d / "plot.png", lambda tmp: open(tmp, "wb").write(b"png"))
            export_model(d / "ck.safetensors", d / "m.pt", format="torchscript", input_size=32)
            for name in ("ck.safetensors", "plot.png", "m.pt"):
                assert (d / name).stat().st_mode & 0o777 == mode, (name, oct((d / name).stat().st_mode))
    finally:
        os.umask(old)


def test_third_party_noise_is_hidden_unless_verbose():
    """What libraries print while a command runs (native writes to descriptor 2, their loggers, their
    warnings) is hidden; this package's warnings still show; -v shows everything. (A fresh process: pytest
    records warnings itself.)"""
    code = (
        "import logging, os, sys, warnings\n"
        "from mobilenets.cli.common import quiet_third_party\n"
        "from mobilenets.weights.core import _warn\n"
        "lib = compile('import warnings\\nwarnings.warn(\"deprecated thing\", FutureWarning)', "
        "'/site-packages/somelib/mod.py', 'exec')\n"
        "warnings.simplefilter('always')\n"
        "with quiet_third_party(sys.argv[1] == 'verbose', native=True):\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    print('python-level chatter', file=sys.stderr)\n"
        "    logging.getLogger('litert_torch').warning('converter chatter')\n"
        "    exec(lib, {})\n"
        "    _warn('x.h5: the weights were trained with tf_padding=True')\n"
    )
    for verbose in (False, True):
        r = subprocess.run([sys.executable, "-c", code, "verbose" if verbose else "quiet"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "tf_padding=True" in r.stderr  # ours, always
        for noise in ("XNNPACK delegate", "python-level chatter", "converter chatter", "deprecated thing"):
            assert (noise in r.stderr) == verbose, (verbose, noise, r.stderr)


@pytest.mark.slow
def test_tflite_export_prints_only_its_report(tmp_path):
    """A real TFLite export through the command: stdout is the report, stderr is empty (litert-torch's
    progress, absl's and TensorFlow Lite's C++ lines, torch's warnings all hidden)."""
    pytest.importorskip("litert_torch")
    from mobilenets import create_model, save_checkpoint

    save_checkpoint(create_model("mobilenet_v1", width=0.25, num_classes=4), tmp_path / "ck.safetensors")
    r = subprocess.run([sys.executable, "-m", "mobilenets", "export", "--weights", str(tmp_path / "ck.safetensors"),
                        "--format", "tflite", "--input-size", "32", "-o", str(tmp_path / "m.tflite")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout.startswith("wrote ") and len(r.stdout.splitlines()) == 3, (r.stdout, r.stderr)


@pytest.mark.parametrize("flags,needles", [
    (["--format", "onnx", "--int8"], ["--int8 needs calibration images", "--calib DIR"]),
    (["--format", "torchscript", "--int8", "--calib", "digits"], ["--int8 works with --format onnx", "torchscript"]),
    (["--format", "onnx", "--calib", "digits"], ["--calib is for --int8", "--eval DIR"]),
])
def test_export_int8_errors_name_the_flags(small, tmp_path, capsys, flags, needles):
    """export's int8 mistakes are told in the command's flags (not the library's calib=), before any work."""
    rc, out, err = cli(capsys, "export", "--weights", small / "ck.safetensors", "-o", tmp_path / "m.onnx", *flags)
    line = one_error_line(err, "export")
    assert rc == 2 and all(n in line for n in needles) and "calib=" not in line and "pass calib" not in line, line
    assert not out and not list(tmp_path.iterdir())


def test_export_refuses_another_formats_suffix(small, tmp_path, capsys):
    rc, out, err = cli(capsys, "export", "--weights", small / "ck.safetensors", "--format", "onnx",
                       "-o", tmp_path / "m.tflite")
    line = one_error_line(err, "export")
    assert rc == 2 and "name it m.onnx" in line and not list(tmp_path.iterdir())
