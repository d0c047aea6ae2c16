"""Hostile and careless input, class by class: every case ends in exit code 2 (CLI) or a MobileNetsError (API)
with one line naming the file / field / argument at fault, no traceback, no file left behind, and the model
unchanged; the valid-but-unusual files (a safetensors header length starting with 0x80, a legacy pickle) load
as what they are.

Most cases run the CLI in-process (``mobilenets.cli.main``), a few as a subprocess end to end; downloads go to
a loopback HTTP server on 127.0.0.1 (truncated bodies, HTML pages, a server dripping a byte at a time).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import mobilenets
import mobilenets.export
import mobilenets.predict
from mobilenets import CheckpointMeta, MobileNetsError, Preprocessing, create_model, save_checkpoint
from mobilenets.detection.inference import detect_images
from mobilenets.segmentation.inference import segment_images
from mobilenets.weights import load_weights, resolve_source
from mobilenets.weights.formats import detect_format
from mobilenets.weights.source import source_name

from .conftest import cli

CLASSES = ["ant", "bee", "cat", "dog"]


# ------------------------------------------------------------------------------------------------ helpers


def assert_one_line_error(rc: int, err: str, command: str, *needles: str, code: int = 2) -> str:
    """Exit ``code`` (2; predict's unreadable images: 1), one line on stderr, ``mobilenets <command>: error: ...``
    holding every needle, no traceback and no terminal escape code."""
    lines = err.strip().splitlines()
    assert rc == code, (rc, err)
    assert "Traceback" not in err and "\x1b" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mobilenets {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mobilenet_v1", width=0.25, num_classes=len(CLASSES)).eval()


def header_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def rewrite(src: Path, dst: Path, *, tensors=None, **fields) -> Path:
    """A copy of checkpoint ``src`` with some tensors and metadata fields replaced (values: JSON-able or a
    function of the parsed old value)."""
    header = header_of(src)
    for key, value in fields.items():
        if callable(value):
            value = value(json.loads(header[key]))
        header[key] = value if isinstance(value, str) else json.dumps(value)
    save_file(tensors if tensors is not None else load_file(str(src)), str(dst), metadata=header)
    return dst


def png_bomb(path: Path, side: int = 100_000) -> Path:
    """A 60-byte PNG whose header claims side x side pixels (PIL's decompression-bomb limit is 179M)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint (V1 0.25, 4 named classes, 32x32), a photo-like image and a labelled image folder."""
    d = tmp_path_factory.mktemp("adv")
    model = tiny_model()
    save_checkpoint(model, d / "ck.safetensors",
                    CheckpointMeta(model.config, class_names=CLASSES, preprocessing=Preprocessing(32, 36)))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / "img.png")
    for c in CLASSES:
        (d / "data" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(d / "data" / c / f"{i}.png")
    (d / "a_file").write_text("I am a file, not a folder\n")
    return d


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working directory (the current folder) and a private download cache."""
    w = tmp_path / "work"
    w.mkdir()
    monkeypatch.chdir(w)
    monkeypatch.setenv("MOBILENETS_CACHE", str(tmp_path / "cache"))
    return w


# ---------------------------------------------------------------------------------- loopback HTTP server


class _Routes(BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, bytes, dict]] = {}
    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        mode, body, headers = self.routes.get(self.path.split("?")[0], ("missing", b"", {}))
        try:
            if mode == "missing":
                self.send_error(404)
            elif mode == "drip-headers":  # a status line one byte at a time, for at most ~10 s
                for b in b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n":
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self.send_response(200)
                self.send_header("Content-Type", headers.get("Content-Type", "application/octet-stream"))
                self.send_header("Content-Length", str(headers.get("Content-Length", len(body))))
                self.end_headers()
                if mode == "drip":  # a byte every 0.1 s, for at most ~10 s
                    for b in body[:100]:
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(0.1)
                else:  # "ok", or a body cut short of its Content-Length
                    self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


@pytest.fixture
def server():
    """(base URL, routes dict: path -> (mode, body, headers), list of requested paths), on 127.0.0.1 only."""
    class Handler(_Routes):
        routes = {}
        requests = []

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Handler.routes, Handler.requests
    httpd.shutdown()
    httpd.server_close()


# ============================================================================================== security


@pytest.mark.parametrize("url, name", [
    ("http://h/a/../../../x/w.safetensors", "w.safetensors"),
    ("http://h/x/..%2F..%2Fetc%2Fw.pth", "w.pth"),
    ("http://h/x/w%00.pth?x=../../y#sha256=00", "w_.pth"),
    ("http://h/..", "weights"),
    ("http://h/", "weights"),
    ("https://h/x/.hidden.pth", "hidden.pth"),
    ("http://h/x/a%5C..%5Cb.pth", "b.pth"),
    ("http://h/x/%1b%5b31mred.pth", "__31mred.pth"),
])
def test_names_derived_from_urls_stay_one_plain_file_name(url, name):
    got = source_name(url)
    assert got == name and "/" not in got and not got.startswith(".")
    assert mobilenets.export.default_output(url, "onnx") == Path(Path(name).stem + ".onnx")


def test_export_of_a_traversal_url_writes_only_in_the_current_folder(server, files, work, capsys):
    base, routes, _ = server
    routes["/a/../../../x/w.safetensors"] = ("ok", (files / "ck.safetensors").read_bytes(), {})
    before = files_under(work.parent)
    rc, out, err = cli(capsys, "export", "--weights", f"{base}/a/../../../x/w.safetensors", "--format",
                       "torchscript")
    assert rc == 0, err
    new = files_under(work.parent) - before
    assert (work / "w.pt") in new
    assert all(p == work / "w.pt" or work.parent / "cache" in p.parents or p == work.parent / "cache" for p in new)
    assert not any(p.name == "x" or p.name == "a" for p in new)


@pytest.mark.parametrize("case", ["truncated", "html", "html-as-octet-stream", "garbage", "missing"])
def test_bad_downloads_are_never_cached(server, files, work, capsys, case):
    base, routes, requests = server
    good = (files / "ck.safetensors").read_bytes()
    routes["/w.safetensors"] = {
        "truncated": ("ok", good[:3000], {"Content-Length": len(good)}),
        "html": ("ok", b"<html><body>Sign in</body></html>", {"Content-Type": "text/html; charset=utf-8"}),
        "html-as-octet-stream": ("ok", b"<!DOCTYPE html><html>login</html>", {}),
        "garbage": ("ok", bytes(range(256)) * 8, {}),
        "missing": ("missing", b"", {}),
    }[case]
    for attempt in (1, 2):  # nothing was cached: the second call downloads again
        rc, _, err = cli(capsys, "inspect", f"{base}/w.safetensors")
        line = assert_one_line_error(rc, err, "inspect", f"{base}/w.safetensors")
        assert "cached download" not in line
        assert {"truncated": "download incomplete: received 3000 of",
                "html": "HTML page", "html-as-octet-stream": "HTML or XML document",
                "garbage": "not a weights file", "missing": "HTTP Error 404"}[case] in line
        assert len(requests) == attempt
    assert not [p for p in (work.parent / "cache").rglob("*") if p.is_file()]


def test_a_bad_cached_file_says_so_and_refresh_downloads_again(server, files, work, capsys):
    base, routes, requests = server
    routes["/w.safetensors"] = ("ok", (files / "ck.safetensors").read_bytes(), {})
    cached = resolve_source(f"{base}/w.safetensors")
    cached.write_bytes(cached.read_bytes()[:2000])  # damaged later (disk, another tool, a killed writer)
    rc, _, err = cli(capsys, "inspect", f"{base}/w.safetensors")
    assert_one_line_error(rc, err, "inspect", f"cached download {cached} of {base}/w.safetensors",
                          "(delete it or pass --refresh)")
    rc, out, err = cli(capsys, "inspect", "--refresh", f"{base}/w.safetensors")
    assert rc == 0, err
    assert "mobilenets weights: mobilenet_v1 width 0.25" in out and len(requests) == 2


@pytest.mark.parametrize("mode", ["drip", "drip-headers"])
def test_a_dripping_server_meets_the_overall_deadline(server, files, work, mode):
    base, routes, _ = server
    routes["/w.pth"] = (mode, (files / "ck.safetensors").read_bytes(), {})
    t0 = time.monotonic()
    with pytest.raises(MobileNetsError, match=r"download took longer than its 1 s deadline \(nothing cached\)"):
        resolve_source(f"{base}/w.pth", deadline=1.0)
    assert time.monotonic() - t0 < 5
    assert not [p for p in (work.parent / "cache").rglob("*") if p.is_file()]


def _evil_pickle(path: Path) -> Path:
    path.write_bytes(b"\x80\x02cos\nsystem\x1b[31mEVIL\nq\x00.")  # GLOBAL os.system + an escape code
    return path


@pytest.mark.parametrize("case", ["module", "escape codes", "legacy module"])
def test_refused_pickles_are_one_plain_line(tmp_path, capsys, case):
    path = tmp_path / "w.pth"
    if case == "module":
        torch.save({"model": nn.Linear(2, 2)}, path)
    elif case == "legacy module":
        torch.save(nn.Conv2d(1, 1, 1), path, _use_new_zipfile_serialization=False)
    else:
        _evil_pickle(path)
    rc, _, err = cli(capsys, "inspect", path)
    line = assert_one_line_error(rc, err, "inspect", str(path), "holds Python objects other than tensors",
                                 "refused, nothing was loaded")
    assert "weights_only" not in line and "\\x1b" not in line


# ============================================================================ a valid file, read correctly


def test_format_detection_over_a_thousand_safetensors_header_lengths(tmp_path):
    """safetensors pads its header to 8 bytes; 1 length in 32 starts with 0x80 (a pickle's first byte)."""
    seen = {}
    path = tmp_path / "w.safetensors"
    for k in range(0, 9000, 8):
        save_file({"w": torch.zeros(2)}, str(path), metadata={"note": "x" * k})
        n = int.from_bytes(path.read_bytes()[:8], "little")
        seen[n] = detect_format(path)
    assert len(seen) >= 1000 and set(seen.values()) == {"safetensors"}
    assert sum(n & 0xFF == 0x80 for n in seen) >= 30  # the lengths the old 1-byte test took for pickles


def test_a_checkpoint_whose_header_length_starts_with_0x80_keeps_its_metadata(files, tmp_path, capsys):
    src = files / "ck.safetensors"
    for k in range(0, 256 * 8, 8):
        path = rewrite(src, tmp_path / "ck80.safetensors", extra={"note": "x" * k})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length with a 0x80 first byte")
    info = mobilenets.inspect_weights(path)
    assert info.format == "mobilenets" and info.class_names == tuple(CLASSES)
    assert info.preprocessing == Preprocessing(32, 36)
    rc, out, err = cli(capsys, "predict", "--weights", path, files / "img.png", "--top", "2")
    assert rc == 0, err
    assert out.splitlines()[1].split()[1] in CLASSES  # the checkpoint's names, not "class i"


def test_legacy_pickle_state_dicts_still_load(files, tmp_path):
    model = tiny_model()
    torch.save(model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert detect_format(tmp_path / "legacy.pth") == "torch"
    loaded, _ = mobilenets.model_from_weights(tmp_path / "legacy.pth")
    assert unchanged(loaded, model.state_dict())


# ======================================================================== crafted or damaged weights files


def _state(files) -> dict[str, torch.Tensor]:
    return load_file(str(files / "ck.safetensors"))


def crafted(files, tmp_path: Path, case: str) -> tuple[Path, str]:
    """(a crafted weights file, a phrase the error must hold)."""
    st = _state(files)
    p = tmp_path / "bad.safetensors"
    if case == "non-string keys":
        p = tmp_path / "bad.pth"
        torch.save({0: st["stem.conv.weight"], **st}, p)
        return p, "keys are not all strings"
    if case == "list values":
        p = tmp_path / "bad.pth"
        torch.save({**st, "stem.conv.weight": [1, 2, 3]}, p)
        return p, "entries are list"
    if case == "rank-0 stem":
        return rewrite(files / "ck.safetensors", p, tensors={**st, "stem.conv.weight": torch.tensor(1.0)}), \
            "stem.conv.weight () vs (8, 3, 3, 3)"
    if case == "rank-1 classifier":
        return rewrite(files / "ck.safetensors", p, tensors={**st, "classifier.weight": torch.zeros(4)}), \
            "classifier.weight (4,) vs (4, 256)"
    if case == "wider everywhere":
        big = {k: torch.zeros(*[2 * d for d in v.shape]) if v.is_floating_point() else v for k, v in st.items()}
        return rewrite(files / "ck.safetensors", p, tensors=big), "of another shape"
    if case == "missing tensor":
        return rewrite(files / "ck.safetensors", p, tensors={k: v for k, v in st.items() if "bn" not in k}), \
            "missing"
    if case == "plain state dict, rank 0":
        p = tmp_path / "bad.pth"
        torch.save({**st, "stem.conv.weight": torch.tensor(1.0)}, p)
        return p, "stem"
    if case == "torchvision names, wrong ranks":
        import torchvision

        sd = torchvision.models.mobilenet_v3_small().state_dict()
        sd["classifier.0.weight"] = torch.zeros(3)
        p = tmp_path / "bad.pth"
        torch.save(sd, p)
        return p, "torchvision weights"
    if case == "NaN":
        bad = dict(st)
        bad["stages.1.0.bn1.running_var"] = bad["stages.1.0.bn1.running_var"].clone()
        bad["stages.1.0.bn1.running_var"][0] = float("nan")
        return rewrite(files / "ck.safetensors", p, tensors=bad), \
            "NaN or infinite values in 1 tensor(s): stages.1.0.bn1.running_var"
    if case == "Inf":
        return rewrite(files / "ck.safetensors", p,
                       tensors={**st, "classifier.bias": torch.full((4,), float("inf"))}), "classifier.bias"
    if case == "int weights":
        return rewrite(files / "ck.safetensors", p,
                       tensors={**st, "stem.conv.weight": st["stem.conv.weight"].long()}), \
            "stem.conv.weight (int64)"
    if case == "bool weights":
        p = tmp_path / "bad.pth"
        torch.save({**st, "classifier.weight": st["classifier.weight"] > 0}, p)
        return p, "classifier.weight (bool)"
    if case == "empty file":
        p.write_bytes(b"")
        return p, "empty file"
    if case == "random bytes":
        p.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
        return p, "not a weights file"
    if case == "cut safetensors":
        p.write_bytes((files / "ck.safetensors").read_bytes()[:5000])
        return p, "not a readable safetensors file"
    if case == "bad JSON header":
        raw = (files / "ck.safetensors").read_bytes()
        n = int.from_bytes(raw[:8], "little")
        p.write_bytes(raw[:8] + b"{" + b"\xff" * (n - 2) + b"}" + raw[8 + n:])
        return p, "header is not valid JSON"
    if case == "empty dict":
        p = tmp_path / "bad.pth"
        torch.save({}, p)
        return p, "not a state dict of tensors"
    if case == "lying safetensors header":  # a terabyte tensor in 4 bytes
        hdr = json.dumps({"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4]}}).encode()
        p.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 4)
        return p, "not a readable safetensors file"
    if case == "zip, not torch":
        import zipfile

        p = tmp_path / "bad.pth"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("a.txt", "hello")
        return p, "not a readable PyTorch weights file (file in archive is not in a subdirectory: a.txt)"
    if case == "cut zip":
        p = tmp_path / "bad.pth"
        torch.save(st, p)
        p.write_bytes(p.read_bytes()[:4000])
        return p, "not a readable PyTorch weights file (PytorchStreamReader failed reading zip archive"
    if case == "garbage tflite":
        pytest.importorskip("ai_edge_litert")
        p = tmp_path / "bad.tflite"
        p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4)
        return p, "not a readable TFLite model"
    if case == "cut h5":
        p = tmp_path / "bad.h5"
        p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        return p, "not a readable Keras HDF5 file"
    if case == "float8 weights":  # floating point, but torch has no isfinite for it
        return rewrite(files / "ck.safetensors", p,
                       tensors={**st, "stem.conv.weight": st["stem.conv.weight"].to(torch.float8_e4m3fn)}), \
            "stem.conv.weight (float8_e4m3fn)"
    if case == "meta tensor":  # a shape without values
        p = tmp_path / "bad.pth"
        torch.save({**st, "classifier.weight": torch.empty(st["classifier.weight"].shape, device="meta")}, p)
        return p, "hold no values on the CPU (classifier.weight on meta)"
    if case == "float64 beyond float32":  # finite in the file, inf once the model holds it
        big = torch.full(st["classifier.weight"].shape, 1e300, dtype=torch.float64)
        return rewrite(files / "ck.safetensors", p, tensors={**st, "classifier.weight": big}), \
            "NaN or infinite values in 1 tensor(s): classifier.weight"
    if case == "negative variance":  # every output would be NaN
        return rewrite(files / "ck.safetensors", p,
                       tensors={**st, "stem.bn.running_var": -st["stem.bn.running_var"]}), \
            "negative batch-norm variances in 1 tensor(s): stem.bn.running_var"
    if case == "module. twice":  # DataParallel's prefix and not: which copy loads would be a guess
        p = tmp_path / "bad.pth"
        torch.save({**st, "module.classifier.bias": st["classifier.bias"] + 1}, p)
        return p, "there twice, with and without the 'module.' prefix (module.classifier.bias)"
    if case == "training state":  # last.pt: the weights without the class names and preprocessing
        p = tmp_path / "last.pt"
        torch.save({"config": "{}", "epoch": 3, "model": st, "optimizer": {}, "ema": None}, p)
        return p, "a mobilenets training state (what 'train --resume' reads), not a weights file"
    if case == "deflated zip bomb":  # 128 MiB of zeros in a few hundred KiB
        import zipfile

        plain = tmp_path / "plain.pth"
        torch.save({**st, "junk": torch.zeros(1 << 27, dtype=torch.uint8)}, plain)
        p = tmp_path / "bad.pth"
        with zipfile.ZipFile(plain) as src, zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        plain.unlink()
        return p, "refused as a decompression bomb"
    raise AssertionError(case)


WEIGHT_CASES = ["non-string keys", "list values", "rank-0 stem", "rank-1 classifier", "wider everywhere",
                "missing tensor", "plain state dict, rank 0", "torchvision names, wrong ranks", "NaN", "Inf",
                "int weights", "bool weights", "empty file", "random bytes", "cut safetensors", "bad JSON header",
                "empty dict", "lying safetensors header", "zip, not torch", "cut zip", "garbage tflite", "cut h5",
                "float8 weights", "meta tensor", "float64 beyond float32", "negative variance", "module. twice",
                "deflated zip bomb", "training state"]


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_crafted_weights_are_refused_by_the_api_and_the_model_is_unchanged(files, tmp_path, case):
    path, phrase = crafted(files, tmp_path, case)
    model = tiny_model()
    before = state_of(model)
    for call in (lambda: load_weights(model, path), lambda: mobilenets.inspect_weights(path),
                 lambda: mobilenets.model_from_weights(path)):
        with pytest.raises(MobileNetsError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(str(path)) and phrase in msg and "\n" not in msg, msg
    assert unchanged(model, before)


@pytest.mark.parametrize("case", ["rank-0 stem", "wider everywhere", "NaN", "int weights", "non-string keys"])
@pytest.mark.parametrize("command", ["inspect", "predict", "eval", "convert", "export"])
def test_crafted_weights_are_one_line_errors_in_every_command(files, tmp_path, capsys, case, command):
    path, phrase = crafted(files, tmp_path, case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = {"inspect": [path], "predict": ["--weights", path, files / "img.png"],
            "eval": ["--weights", path, "--data", files / "data", "--confusion-png", out_dir / "c.png"],
            "convert": [path, out_dir / "c.safetensors"],
            "export": ["--weights", path, "--format", "onnx", "-o", out_dir / "m.onnx"]}[command]
    rc, out, err = cli(capsys, command, *args)
    line = assert_one_line_error(rc, err, command, str(path), phrase)
    assert len(line) < 400  # a summary, never torch's list of every mismatched tensor
    assert not list(out_dir.iterdir())


def _keras_like_h5(path: Path, *, kernel_shape=(3, 3, 3, 8), dtype="float32") -> Path:
    import h5py

    with h5py.File(path, "w") as f:  # the first layers of a Keras MobileNet (V1)
        f.attrs["layer_names"] = [b"conv1", b"conv1_bn", b"conv_dw_1"]
        g = f.create_group("conv1")
        g.attrs["weight_names"] = [b"conv1/kernel:0"]
        g.create_dataset("conv1/kernel:0", data=np.zeros(kernel_shape, dtype=dtype))
        g = f.create_group("conv_dw_1")
        g.attrs["weight_names"] = [b"conv_dw_1/depthwise_kernel:0"]
        g.create_dataset("conv_dw_1/depthwise_kernel:0", data=np.zeros((3, 3, 8, 1), dtype="float32"))
        g = f.create_group("conv1_bn")
        names = [f"conv1_bn/{v}:0".encode() for v in ("gamma", "beta", "moving_mean", "moving_variance")]
        g.attrs["weight_names"] = names
        for n in names:
            g.create_dataset(n.decode(), data=np.ones(8, dtype="float32"))
    return path


def _replace_kernel(path: Path, make) -> None:
    """Replace conv1's kernel in the file at ``path`` by ``make(group, name, shape)``."""
    import h5py

    with h5py.File(path, "r+") as f:
        shape = f["conv1"]["conv1/kernel:0"].shape
        del f["conv1"]["conv1/kernel:0"]
        make(f["conv1"], "conv1/kernel:0", shape)


@pytest.mark.parametrize("case, phrase", [
    ("rank-3 kernel", "layer conv1: kernel of shape (3, 3, 8) is not a rank-4 kernel"),
    ("string kernel", "weight conv1/kernel:0 has dtype"),
    ("no layers", "not a Keras model or weights file"),
    # the bytes of another file on this machine: external storage, an external link, a virtual dataset
    ("external storage", "weight conv1/kernel:0 takes its bytes from other files (HDF5 external storage)"),
    ("external link", "weight conv1/kernel:0 links to another file"),
    ("virtual dataset", "weight conv1/kernel:0 takes its bytes from other files (HDF5 virtual dataset)"),
    # 4 TiB of gzip-compressed fill values in a few KiB: numpy would try to allocate it
    ("fill-value bomb", "weight conv1/kernel:0 (1048576, 1048576): the file's arrays would take 4,194,304 MiB"),
])
def test_crafted_keras_files_are_refused(tmp_path, capsys, case, phrase):
    import h5py

    path = tmp_path / "k.h5"
    other = tmp_path / "other.bin"
    other.write_bytes(np.arange(3 * 3 * 3 * 8, dtype=np.float32).tobytes())
    if case == "rank-3 kernel":
        _keras_like_h5(path, kernel_shape=(3, 3, 8))
    elif case == "string kernel":
        _keras_like_h5(path, kernel_shape=(2,), dtype="S4")
    elif case == "no layers":
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.zeros(3))
    else:
        _keras_like_h5(path)
        with h5py.File(tmp_path / "other.h5", "w") as f:
            f.create_dataset("k", data=np.ones((3, 3, 3, 8), dtype="float32"))
        _replace_kernel(path, {
            "external storage": lambda g, n, shape: g.create_dataset(n, shape=shape, dtype="f4",
                                                                    external=[(str(other), 0, other.stat().st_size)]),
            "external link": lambda g, n, shape: g.__setitem__(n, h5py.ExternalLink(str(tmp_path / "other.h5"), "k")),
            "virtual dataset": lambda g, n, shape: g.create_virtual_dataset(n, _virtual(tmp_path / "other.h5", shape)),
            "fill-value bomb": lambda g, n, shape: g.create_dataset(n, shape=(1 << 20, 1 << 20), dtype="f4",
                                                                   chunks=(1024, 1024), compression="gzip"),
        }[case])
    rc, _, err = cli(capsys, "inspect", path)
    assert_one_line_error(rc, err, "inspect", str(path), phrase)


def _virtual(source: Path, shape):
    import h5py

    layout = h5py.VirtualLayout(shape=shape, dtype="f4")
    layout[...] = h5py.VirtualSource(str(source), "k", shape=shape)
    return layout


def test_a_soft_link_inside_a_keras_file_is_still_read(tmp_path):
    """A link to another dataset of the same file is ordinary HDF5 (nothing from outside the file)."""
    import h5py

    from mobilenets.weights.keras import read_h5

    path = _keras_like_h5(tmp_path / "k.h5")
    _replace_kernel(path, lambda g, n, shape: (g.create_dataset("kept", data=np.full(shape, 2.0, dtype="f4")),
                                               g.__setitem__(n, h5py.SoftLink(g.name + "/kept"))))
    kernel = dict(read_h5(path)["conv1"])["kernel"]
    assert kernel.shape == (3, 3, 3, 8) and (kernel == 2.0).all()


# ------------------------------------------------------------------------------------ checkpoint metadata


METADATA_CASES = [
    ("config", lambda c: {**c, "name": "mobilenet_v3_smal"}, "did you mean mobilenet_v3_small"),
    ("config", lambda c: {**c, "name": "resnet50"}, "unknown model 'resnet50'"),
    ("config", lambda c: {**c, "width": 0}, "width must be in (0, 16], got 0"),
    ("config", lambda c: {**c, "width": "wide"}, "width must be"),
    ("config", lambda c: {**c, "num_classes": -3}, "num_classes must be an integer"),
    ("config", lambda c: {**c, "num_classes": 10**9}, "num_classes must be an integer"),
    ("config", lambda c: {**c, "in_chans": 0}, "in_chans must be"),
    ("config", lambda c: {**c, "bn_eps": -1}, "bn_eps must be"),
    ("config", lambda c: {**c, "dropout": 7}, "dropout must be"),
    ("config", lambda c: {**c, "tf_padding": "yes"}, "tf_padding must be true or false"),
    ("config", lambda c: {**c, "colour": "red"}, "unknown field(s) 'colour'"),
    ("config", lambda c: [c], "expected a JSON object, got list"),
    ("config", "{not json", "not valid JSON"),
    ("preprocessing", lambda p: {**p, "interpolation": "smooth"}, "interpolation must be one of"),
    ("preprocessing", lambda p: {**p, "std": [0, 0.2, 0.2]}, "std must be 3 finite numbers > 0"),
    ("preprocessing", lambda p: {**p, "mean": [0.5, "x", 0.5]}, "mean must be"),
    ("preprocessing", lambda p: {**p, "crop": 0}, "crop must be an integer in [32, 2048], got 0"),
    ("preprocessing", lambda p: {**p, "crop": 100000}, "crop must be an integer in [32, 2048], got 100000"),
    ("preprocessing", lambda p: {**p, "resize": 10}, "resize must be"),
    ("class_names", lambda n: n[:2], "expected 4 strings (one per class), got 2"),
    ("class_names", lambda n: [1, 2, 3, 4], "not all strings"),
    ("class_names", lambda n: ["ant", "bee\x1b[2J", "cat", "dog"], "control characters"),
    ("extra", "[]", "expected a JSON object"),
    ("preprocessing", "[]", "expected a JSON object, got list"),
]


@pytest.mark.parametrize("field, change, phrase", METADATA_CASES,
                         ids=[f"{f}-{p[:30]}" for f, _, p in METADATA_CASES])
def test_checkpoint_metadata_is_validated_when_read(files, tmp_path, field, change, phrase):
    path = rewrite(files / "ck.safetensors", tmp_path / "meta.safetensors", **{field: change})
    model = tiny_model()
    before = state_of(model)
    for call in (lambda: mobilenets.inspect_weights(path), lambda: load_weights(model, path),
                 lambda: mobilenets.load_checkpoint(path)):
        with pytest.raises(MobileNetsError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{path}: bad checkpoint metadata ({field}): ") and phrase in msg, msg
        assert msg.count(str(path)) == 1, msg
    assert unchanged(model, before)


def test_a_checkpoint_of_another_format_version_is_refused(files, tmp_path):
    """A checkpoint a later mobilenets wrote (format /2) is not read as a plain state dict, its metadata
    ignored; and a safetensors file without metadata is told to convert into another name, not onto itself."""
    path = rewrite(files / "ck.safetensors", tmp_path / "v2.safetensors", format="mobilenets.checkpoint/2")
    for call in (lambda: mobilenets.inspect_weights(path), lambda: mobilenets.load_checkpoint(path)):
        with pytest.raises(MobileNetsError, match=r"v2.safetensors: a mobilenets checkpoint in format "
                                                  r"'mobilenets.checkpoint/2', which this version"):
            call()
    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(files / "ck.safetensors")), str(plain))
    with pytest.raises(MobileNetsError, match=r"'mobilenets convert plain.safetensors plain.converted.safetensors'"):
        mobilenets.load_checkpoint(plain)


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_bad_metadata_is_one_line_in_the_cli(files, tmp_path, capsys, command):
    path = rewrite(files / "ck.safetensors", tmp_path / "meta.safetensors",
                   preprocessing=lambda p: {**p, "std": [0.0, 0.0, 0.0]})
    args = ["--weights", path, files / "img.png"] if command == "predict" else \
        ["--weights", path, "--data", files / "data"]
    rc, _, err = cli(capsys, command, *args)
    assert_one_line_error(rc, err, command, str(path), "(preprocessing)", "std must be")
    assert not (tmp_path / "confusion_matrix.png").exists()


# ================================================================================================= images


def test_decompression_bombs_are_one_line_errors(files, tmp_path, capsys):
    bomb = png_bomb(tmp_path / "bomb.png")
    rc, _, err = cli(capsys, "predict", "--weights", files / "ck.safetensors", bomb)
    assert_one_line_error(rc, err, "predict", str(bomb), "not a readable image", "decompression bomb", code=1)
    with pytest.raises(MobileNetsError, match="decompression bomb"):
        mobilenets.predict.predict(files / "ck.safetensors", [bomb])


def test_decompression_bomb_in_export_calibration(files, tmp_path, capsys, work):
    calib = tmp_path / "calib" / "ant"
    calib.mkdir(parents=True)
    png_bomb(calib / "bomb.png")
    before = files_under(tmp_path)
    rc, _, err = cli(capsys, "export", "--weights", files / "ck.safetensors", "--format", "onnx", "--int8",
                     "--calib", calib.parent)
    assert_one_line_error(rc, err, "export", "bomb.png", "decompression bomb")
    assert files_under(tmp_path) == before


def test_an_image_that_fails_to_decode_in_evaluation_is_left_out_not_replaced(files, tmp_path):
    """A JPEG cut in half passes the folder's up-front check (PIL's verify() reads headers) and fails only when
    decoded: the evaluation scores the other images once each (a stand-in sample, as training uses, would be
    scored twice and the count would include the broken file)."""
    import io
    import shutil

    data = shutil.copytree(files / "data", tmp_path / "data")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    (data / CLASSES[0] / "cut.jpg").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    r = mobilenets.evaluate(files / "ck.safetensors", data=data, confusion_png=tmp_path / "c.png", batch_size=3)
    assert r.count == 2 * len(CLASSES) and r.confusion.sum(1).tolist() == [2] * len(CLASSES)
    with pytest.raises(MobileNetsError, match="cut.jpg: unreadable image"):
        mobilenets.evaluate(files / "ck.safetensors", data=data, confusion_png=tmp_path / "c.png", strict=True)


def test_file_names_with_terminal_escapes_are_logged_escaped(files, tmp_path, capsys):
    """A file name is data: an unreadable image named with a clear-screen escape and a newline is logged with
    both shown escaped, by the command line's log handler (and train.log's, which takes the same filter)."""
    import shutil

    data = shutil.copytree(files / "data", tmp_path / "data")
    (data / CLASSES[0] / "bad\x1b[2J\nname.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    rc, out, err = cli(capsys, "eval", "--weights", files / "ck.safetensors", "--data", data,
                       "--confusion-png", tmp_path / "c.png")
    assert rc == 0, err
    assert "\x1b" not in out + err and "bad\\x1b[2J\\nname.jpg" in out + err, out + err


def test_16_bit_greyscale_reads_as_its_8_bit_twin(tmp_path):
    """A 16-bit PNG (mode I;16) and a 32-bit integer TIFF (mode I) read as the 8-bit image of the same levels in
    every reader (PIL's convert("RGB") clipped them at 255: an all-white image, classified without a word);
    float pixels (mode F) are an unreadable image, said in one line."""
    from torchvision.io import read_file

    from mobilenets.data import ImageFiles, open_image
    from mobilenets.detection.data import read_rgb
    from mobilenets.gpu_data import _decode_cpu

    a8 = np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)
    Image.fromarray(a8).save(tmp_path / "g8.png")
    Image.fromarray(a8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(a8.astype(np.int32) * 257).save(tmp_path / "i32.tiff")
    assert Image.open(tmp_path / "g16.png").mode == "I;16" and Image.open(tmp_path / "i32.tiff").mode == "I"
    want = np.asarray(open_image(tmp_path / "g8.png"))
    for p in (tmp_path / "g16.png", tmp_path / "i32.tiff"):
        assert np.array_equal(np.asarray(open_image(p)), want)
        assert np.array_equal(read_rgb(p), want)
        assert np.array_equal(np.asarray(ImageFiles([(str(p), 0)], ["a"])[0][0]), want)
        assert torch.equal(_decode_cpu(read_file(str(p))), torch.from_numpy(want).permute(2, 0, 1).contiguous())
    Image.fromarray(a8.astype(np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(MobileNetsError, match=r"f.tiff: not a readable image \(ValueError: 32-bit floating-point"):
        open_image(tmp_path / "f.tiff")


@pytest.mark.parametrize("content", [b"", b"GIF89a\x01\x00", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"%PDF-1.4"])
def test_broken_images_are_one_line_errors(files, tmp_path, capsys, content):
    img = tmp_path / "x.png"
    img.write_bytes(content)
    rc, _, err = cli(capsys, "predict", "--weights", files / "ck.safetensors", img)
    assert_one_line_error(rc, err, "predict", str(img), "not a readable image", code=1)


# ============================================================================================== arguments


ARG_CASES = [
    ("predict", ["--weights", "w", "img", "--top", "0"], "argument --top: 0 is out of range"),
    ("predict", ["--weights", "w", "img", "--width", "nan"], "argument --width"),
    ("inspect", ["w", "--width", "inf"], "argument --width"),
    ("inspect", ["w", "--width", "-1"], "argument --width: -1 is out of range"),
    ("inspect", ["w", "--model", "mobilenet_v3_smal"], "did you mean mobilenet_v3_small"),
    ("convert", ["w", "out.safetensors", "--model", "mobilnet_v2"], "did you mean mobilenet_v2"),
    ("profile", ["mobilenet_v3_larg"], "did you mean mobilenet_v3_large"),
    ("profile", ["mobilenet_v1", "--resolution", "8"], "argument --resolution: 8 is out of range"),
    ("profile", ["mobilenet_v1", "--resolution", "1e9"], "is not an integer"),
    ("profile", ["mobilenet_v1", "--num-classes", "-1"], "argument --num-classes: -1 is out of range"),
    ("profile", ["mobilenet_v1", "--width", "0"], "argument --width: 0 is out of range"),
    ("export", ["--weights", "w", "--format", "onnx", "--input-size", "100000"], "argument --input-size"),
    ("export", ["--weights", "w", "--format", "onnx", "--threads", "0"], "argument --threads"),
    ("bench", ["--model", "mobilenet_v5"], "argument --model: invalid choice"),
    ("bench", ["--resolution", "0"], "argument --resolution"),
    ("bench", ["--skip", "ONNX"], "argument --skip: invalid choice: 'ONNX'"),
    ("export", ["--weights", "w", "--format", "onnx", "--keep-float", "stem", "--calib-size", "8"],
     "--calib-size, --keep-float: for int8 exports only (add --int8)"),
    ("train", ["--freeze-backbone"], "freeze backbone keeps the backbone as loaded: pass weights"),
    ("train-segmentation", ["--model", "deeplabv3_mobilenet_v2", "--head", "torchvision"],
     "deeplabv3_mobilenet_v2 has one head"),
    ("train", ["--qat", "--weights", "w", "--opt", "sgd", "--resolution", "96"],
     "--qat does not take --opt, --resolution (the model and its input come from --weights"),
    ("eval", ["--weights", "w", "--batch-size", "0"], "argument --batch-size"),
    ("eval", ["--weights", "w", "--workers", "-1"], "argument --workers"),
    ("train", ["--batch-size", "0"], "argument --batch-size"),
    ("train", ["--resolution", "100000"], "argument --resolution"),
    ("train", ["--label-smoothing", "2"], "argument --label-smoothing"),
    ("train", ["--dropout", "1.5"], "argument --dropout"),
    ("train", ["--workers", "-2"], "argument --workers"),
    ("train", ["--width", "0"], "argument --width"),
]


@pytest.mark.parametrize("command, args, phrase", ARG_CASES, ids=[f"{c}-{' '.join(a[-2:])}" for c, a, _ in ARG_CASES])
def test_arguments_are_range_checked_up_front(tmp_path, capsys, monkeypatch, command, args, phrase):
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(capsys, command, *args)
    assert_one_line_error(rc, err, command, phrase)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("out_dir, phrase", [("a_file", "a_file: not a folder (the output folder)"),
                                             ("a_file/results", "a_file is not a folder")])
def test_bench_checks_its_output_folder_before_timing(tmp_path, capsys, monkeypatch, out_dir, phrase):
    """An --out-dir that cannot be written is said before the benchmark runs (minutes), not after."""
    from mobilenets.export import bench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("a file, not a folder\n")
    monkeypatch.setattr(bench, "_bench_model", lambda *a, **k: pytest.fail("the benchmark ran"))
    rc, _, err = cli(capsys, "bench", "--quick", "--model", "mobilenet_v3_small", "--out-dir", out_dir)
    assert_one_line_error(rc, err, "bench", phrase)


def test_eval_refuses_the_other_tasks_output_flags(files, tmp_path, capsys):
    """eval's --output-dir (detector / segmenter files) and --confusion-png (a classifier's matrix) are each
    refused for the other kind of checkpoint, before any evaluation, instead of being ignored."""
    rc, _, err = cli(capsys, "eval", "--weights", files / "ck.safetensors", "--data", files / "data",
                     "--output-dir", tmp_path / "out")
    assert_one_line_error(rc, err, "eval", "--output-dir is for detectors and segmenters")
    seg = create_model("lraspp_mobilenet_v3_small", width=0.5, num_classes=3)
    path = save_checkpoint(seg, tmp_path / "seg.safetensors",
                           CheckpointMeta(seg.config, ["background", "a", "b"], Preprocessing(64, 64),
                                          {"task": "segmentation"}))
    rc, _, err = cli(capsys, "eval", "--weights", path, "--confusion-png", tmp_path / "c.png")
    assert_one_line_error(rc, err, "eval", "--confusion-png is a classifier's confusion matrix")
    assert [p.name for p in tmp_path.iterdir()] == ["seg.safetensors"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(files, capsys):
    rc, _, err = cli(capsys, "eval", "--weights", files / "ck.safetensors", "--data", files / "data",
                     "--device", "cuda")
    assert_one_line_error(rc, err, "eval", "no CUDA GPU is visible")


@pytest.mark.parametrize("command", ["convert", "export", "eval"])
def test_output_paths_under_a_file_are_one_line_errors(files, tmp_path, capsys, command):
    blocked = files / "a_file" / "sub" / "out"
    args = {"convert": [files / "ck.safetensors", f"{blocked}.safetensors"],
            "export": ["--weights", files / "ck.safetensors", "--format", "torchscript", "-o", f"{blocked}.pt"],
            "eval": ["--weights", files / "ck.safetensors", "--data", files / "data",
                     "--confusion-png", f"{blocked}.png"]}[command]
    before = files_under(files)
    rc, _, err = cli(capsys, command, *args)
    assert_one_line_error(rc, err, command, str(files / "a_file"), "is not a folder")
    assert files_under(files) == before


def test_an_output_path_that_is_a_folder_is_one_line(files, tmp_path, capsys):
    rc, _, err = cli(capsys, "convert", files / "ck.safetensors", tmp_path)
    assert_one_line_error(rc, err, "convert", "is a directory")


def test_a_full_disk_is_one_line_and_keeps_what_was_there(tmp_path):
    """A write that fails midway (no space left) leaves the file it would have replaced as it was, and no temp
    file; the error is one MobileNetsError line."""
    import errno

    from mobilenets.checkpoint import atomic_write

    target = tmp_path / "ck.safetensors"
    target.write_bytes(b"the run's checkpoint")

    def write(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(MobileNetsError, match=r"ck.safetensors: could not be written \(No space left on device\); "
                                              "nothing was replaced"):
        atomic_write(target, write)
    assert target.read_bytes() == b"the run's checkpoint" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_read_only_folder_is_one_line_in_the_cli(files, tmp_path, capsys, monkeypatch):
    """The file system refusing a write (read-only, quota, permissions; tests may run as root, so it is
    simulated): one line naming the path, exit 2, in the command that writes there and in any other."""
    import errno
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", dir)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    rc, _, err = cli(capsys, "convert", files / "ck.safetensors", tmp_path / "ro" / "c.safetensors")
    assert_one_line_error(rc, err, "convert", "c.safetensors: cannot write there (Read-only file system)")

    def read_only(*args, **kwargs):  # any OSError a library call lets through
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro" / "x.png"))

    monkeypatch.setattr(mobilenets.weights, "inspect_weights", read_only)
    rc, _, err = cli(capsys, "inspect", files / "ck.safetensors")
    assert_one_line_error(rc, err, "inspect", "x.png: Read-only file system")


# ============================================================================================= Python API


API_CASES = [
    (lambda f: create_model("mobilenet_v3_smal"), "did you mean mobilenet_v3_small"),
    (lambda f: create_model("mobilenet_v2", width=0), "width must be"),
    (lambda f: create_model("mobilenet_v2", num_classes=-1), "num_classes must be"),
    (lambda f: create_model("mobilenet_v2", num_classes=2.5), "num_classes must be"),
    (lambda f: mobilenets.inspect_weights(f / "ck.safetensors", width=-1), "width must be"),
    (lambda f: mobilenets.inspect_weights(f / "ck.safetensors", name="mobilenet_v9"), "unknown model"),
    (lambda f: mobilenets.inspect_weights(f / "ck.safetensors", name="mobilenet_v2"), "not mobilenet_v2"),
    (lambda f: mobilenets.inspect_weights(f / "ck.safetensors", sha256="xyz"), "sha256 must be 64 hex"),
    (lambda f: mobilenets.inspect_weights(42), "a path or an http(s) URL"),
    (lambda f: mobilenets.inspect_weights("ftp://host/w.pth"), "unsupported URL scheme"),
    (lambda f: mobilenets.inspect_weights(f), "is a directory"),
    (lambda f: load_weights(nn.Linear(2, 2), f / "ck.safetensors"), "not a Linear"),
    (lambda f: mobilenets.predict.predict(f / "ck.safetensors", [f / "img.png"], top=0), "top must be"),
    (lambda f: mobilenets.export.export_model(f / "ck.safetensors", "x.onnx", format="onnx", input_size=8),
     "input_size must be"),
    (lambda f: mobilenets.export.export_model(f / "ck.safetensors", "x.onnx", format="coreml"), "unknown format"),
    (lambda f: mobilenets.evaluate(f / "ck.safetensors", data=f / "data", batch_size=0), "batch_size must be"),
    (lambda f: mobilenets.evaluate(f / "ck.safetensors", data=f / "data", device="tpu"), "device"),
    (lambda f: Preprocessing(crop=0), "crop must be"),
    (lambda f: mobilenets.read_checkpoint(f / "img.png") if hasattr(mobilenets, "read_checkpoint")
     else mobilenets.load_checkpoint(f / "img.png"), "not a weights file"),
    # an option no builder takes: said before the file is read (or downloaded)
    (lambda f: create_model("mobilenet_v2", foo=1), "mobilenet_v2 takes no option 'foo'; its options: bn_eps"),
    (lambda f: create_model("ssdlite_mobilenet_v3_small", tail="detection"), "takes no option 'tail'"),
    (lambda f: mobilenets.model_from_weights(f / "missing.pth", foo=1), "a classifier takes no option 'foo'"),
    (lambda f: create_model("mobilenet_v2", keep_background=True), "takes no option 'keep_background'"),
    (lambda f: mobilenets.weights.read_weights("http://127.0.0.1:9/w.pth", timeout="5"), "timeout must be a"),
    (lambda f: mobilenets.weights.read_weights("http://127.0.0.1:9/w.pth", deadline=float("nan")),
     "deadline must be a positive number of seconds, got nan"),
    (lambda f: mobilenets.inspect_weights("/dev/null"), "/dev/null: not a regular file"),
    # a negative batch size once returned no results and no error
    (lambda f: segment_images(create_model("lraspp_mobilenet_v3_small", width=0.5, num_classes=3), [],
                              preprocessing=Preprocessing(64, 64), class_names=None, batch_size=-1),
     "batch_size must be an integer in [1, 65536], got -1"),
    (lambda f: detect_images(create_model("ssdlite_mobilenet_v3_small", width=0.5, num_classes=3), [],
                             preprocessing=Preprocessing(64, 64), class_names=None, batch_size=0),
     "batch_size must be an integer in [1, 65536], got 0"),
]


@pytest.mark.parametrize("i", range(len(API_CASES)))
def test_the_api_raises_mobilenets_error_for_bad_arguments(files, tmp_path, monkeypatch, i):
    monkeypatch.chdir(tmp_path)
    call, phrase = API_CASES[i]
    with pytest.raises(MobileNetsError) as e:
        call(files)
    assert phrase in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


# =============================================================================================== datasets


def test_a_symlink_loop_in_a_class_folder_does_not_multiply_images(files, tmp_path, caplog):
    from mobilenets.data import load_image_folders

    root = tmp_path / "ds"
    for split in ("train", "val"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{i}.png")
    plain = load_image_folders(root)
    (root / "train" / "a" / "loop").symlink_to("..", target_is_directory=True)  # -> train/: every class again
    (root / "train" / "b" / "self").symlink_to(".", target_is_directory=True)
    (root / "train" / "b" / "deeper").mkdir()
    (root / "train" / "b" / "deeper" / "up").symlink_to("../..", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="mobilenets"):
        looped = load_image_folders(root)
    assert looped.train == plain.train and len(looped.train) == 6
    assert "skipped 3 linked folder(s) already read (a symlink loop?)" in caplog.text


def test_a_linked_class_folder_is_still_read(tmp_path):
    from mobilenets.data import load_image_folders

    real = tmp_path / "elsewhere" / "b"
    real.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(real / "0.png")
    (tmp_path / "ds" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "a" / "0.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "a" / "1.png")
    (tmp_path / "ds" / "b").symlink_to(real, target_is_directory=True)
    splits = load_image_folders(tmp_path / "ds", val_split=0.5)
    assert len(splits.train) + len(splits.val) == 3


# ====================================================================================== end to end (few)


@pytest.mark.slow
def test_end_to_end_subprocesses(files, tmp_path):
    """The same classes as a user meets them: real processes (run side by side), exit codes and stderr."""
    evil = _evil_pickle(tmp_path / "evil.pth")
    wide, _ = crafted(files, tmp_path, "wider everywhere")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = [["predict", "--weights", evil, files / "img.png"],
            ["eval", "--weights", wide, "--data", files / "data"]]
    procs = [subprocess.Popen([sys.executable, "-m", "mobilenets", *map(str, c)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for c in cmds]
    (out1, err1), (out2, err2) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [2, 2], (err1, err2)
    assert err1.strip().splitlines() == [f"mobilenets predict: error: {evil}: holds Python objects other than "
                                         "tensors (os.system); refused, nothing was loaded"]
    assert len(err2.strip().splitlines()) == 1 and "Traceback" not in err2 and "of another shape" in err2
    assert not out1 and not out2 and sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "evil.pth"]


def _tflite_model(*, subgraphs: int = 1, opcode_index: int = 0, tensor_buffer: int = 0) -> bytes:
    """A TFLite flatbuffer built from the schema: ``subgraphs`` subgraphs of one tensor (input and output)
    and one operator of ``opcode_index`` (with no opcodes in the file), its tensor on ``tensor_buffer``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version, model.buffers, model.operatorCodes = 3, [schema.BufferT()], []
    model.subgraphs = []
    for _ in range(subgraphs):
        graph = schema.SubGraphT()
        tensor = schema.TensorT()
        tensor.shape, tensor.type, tensor.buffer, tensor.name = [1, 4], schema.TensorType.FLOAT32, tensor_buffer, "x"
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode_index, [0], [0]
        graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor], [0], [0], [op]
        model.subgraphs.append(graph)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("kind, phrase", [
    ("no subgraph", "no subgraph"),
    ("opcode out of range", "operator 0: an opcode index outside the file's 0"),
    ("buffer out of range", "a tensor names a buffer outside the file's 1"),
])
def test_crafted_tflite_structures_are_one_line_not_a_crash(tmp_path, kind, phrase):
    """LiteRT's interpreter trusts a file's structure: one without a subgraph crashed the whole process
    (segmentation fault, no message). The structure is checked first, for weights and exported files alike."""
    pytest.importorskip("ai_edge_litert")
    from mobilenets.export import load_artifact

    path = tmp_path / "crafted.tflite"
    path.write_bytes(_tflite_model(**{"no subgraph": dict(subgraphs=0), "opcode out of range": dict(opcode_index=0),
                                      "buffer out of range": dict(opcode_index=0, tensor_buffer=7)}[kind]))
    for call in (lambda: mobilenets.inspect_weights(path), lambda: load_artifact(path, "tflite")):
        with pytest.raises(MobileNetsError, match="not a readable TFLite model") as e:
            call()
        assert phrase in str(e.value) and "\n" not in str(e.value)
