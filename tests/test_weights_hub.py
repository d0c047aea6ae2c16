"""Published weights by name (weights/hub.py): the catalog's data against its sources, name lookup, timm /
torchvision model-name aliases, and download -> check -> convert -> cache against a loopback server standing in
for the hosts (no test reaches the internet)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets import MobileNetsError, create_model, inspect_weights, list_models, load_weights
from mobilenets.registry import ALIASES, resolve_alias
from mobilenets.weights import hub

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub.HASH_REGEX


# ------------------------------------------------------------------------------------------ the data itself


def test_catalog_entries_are_well_formed():
    assert len({w.name for w in hub.PUBLISHED_WEIGHTS}) == len(hub.PUBLISHED_WEIGHTS) == len(hub.CATALOG)
    for w in hub.PUBLISHED_WEIGHTS:
        assert w.source in hub.SOURCES and w.url.startswith("https://") and w.cited, w.name
        assert w.top1 is None or 0 < w.top1 < 100, w.name
        assert w.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", w.sha256), w.name
        assert w.md5 is None or re.fullmatch(r"[0-9a-f]{32}", w.md5), w.name
        if w.sha256_prefix:  # the prefix is the one in the file name, as torch.hub reads it
            assert HASH_IN_NAME.search(w.file_name)[1] == w.sha256_prefix and len(w.sha256_prefix) >= 8, w.name
        if w.source == "torchvision":
            assert w.sha256_prefix, w.name  # every torchvision file name carries one
        if w.mean is not None:
            assert w.preprocessing().crop == w.crop
        if hub.is_available(w) and w.width is not None:  # the model it names builds at that width
            if mobilenets.registry.get_model_entry(w.model).task == "classification":
                assert create_model(w.model, width=w.width, num_classes=10).config.width == w.width
    # V4 entries wait for the V4 models; everything else loads into a model of this version
    assert {w.model for w in hub.PUBLISHED_WEIGHTS if not hub.is_available(w)} <= {
        "deeplabv3_mobilenet_v3_large", *(m for m in (w.model for w in hub.PUBLISHED_WEIGHTS)
                                          if m.startswith("mobilenet_v4_"))}


@pytest.mark.parametrize("cls", ["MobileNet_V2_Weights", "MobileNet_V3_Large_Weights", "MobileNet_V3_Small_Weights",
                                 "detection.SSDLite320_MobileNet_V3_Large_Weights",
                                 "segmentation.LRASPP_MobileNet_V3_Large_Weights",
                                 "segmentation.DeepLabV3_MobileNet_V3_Large_Weights"])
def test_torchvision_entries_match_torchvision(cls):
    enum = torchvision.models
    for part in cls.split("."):
        enum = getattr(enum, part)
    for member in enum:
        entry = hub.lookup(member)  # the enum member itself is accepted
        assert entry.url == member.url and entry.tag.endswith("." + member.name)
        (metrics,) = member.meta["_metrics"].values()
        assert entry.top1 == metrics.get("acc@1", metrics.get("box_map", metrics.get("miou")))
        if entry.mean is not None:
            t = member.transforms()
            assert (entry.crop, entry.resize) == (t.crop_size[0], t.resize_size[0])
            assert entry.mean == tuple(t.mean) and entry.std == tuple(t.std)


def test_timm_entries_match_timm_pretrained_cfg():
    from timm.models import get_pretrained_cfg

    for w in hub.published_for(source="timm"):
        cfg = get_pretrained_cfg(w.tag)
        assert cfg is not None, w.tag
        if w.sha256_prefix:
            assert w.url == cfg.url, w.tag
        else:
            assert w.url == f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors", w.tag
        assert (w.crop, w.resize) == (cfg.input_size[-1], round(cfg.input_size[-1] / cfg.crop_pct)), w.tag
        assert (w.mean, w.std, w.interpolation) == (tuple(cfg.mean), tuple(cfg.std), cfg.interpolation), w.tag
        assert w.tf == w.tag.startswith("tf_")


def test_keras_entries_match_keras_source():
    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("keras is not installed")
    apps = Path(list(spec.submodule_search_locations)[0]) / "src" / "applications"
    text = {name: (apps / f"{name}.py").read_text() for name in ("mobilenet", "mobilenet_v2", "mobilenet_v3")}
    for w in hub.published_for(source="keras"):
        folder, file = w.url.rsplit("/", 2)[-2:]
        assert f'"https://storage.googleapis.com/tensorflow/keras-applications/{folder}/"' in text[folder]
        if w.md5:  # WEIGHTS_HASHES["<key>"] = (include_top md5, no_top md5)
            key = file.removeprefix("weights_mobilenet_v3_").removesuffix(".h5")
            assert re.search(rf'"{re.escape(key)}": \(\s*"{w.md5}"', text[folder]), w.name


# ------------------------------------------------------------------------------------------- name lookup


def test_lookup_forms():
    assert hub.lookup("timm:mobilenetv3_large_100.ra_in1k").tag == "mobilenetv3_large_100.ra_in1k"
    assert hub.lookup("mobilenetv3_large_100.ra_in1k").source == "timm"  # a tag alone
    assert hub.lookup("torchvision", model="mobilenet_v3_large").tag == "mobilenet_v3_large.IMAGENET1K_V2"
    assert hub.lookup("IMAGENET1K_V1", model="mobilenet_v2").url.endswith("mobilenet_v2-b0353104.pth")
    assert hub.lookup("MobileNet_V3_Large_Weights.DEFAULT", model="mobilenet_v3_large").tag.endswith("IMAGENET1K_V2")
    assert hub.lookup("COCO_V1", model="ssdlite_mobilenet_v3_large").model == "ssdlite_mobilenet_v3_large"
    assert hub.lookup("keras", model="mobilenet_v1", width=0.25).width == 0.25
    assert hub.lookup("tflite:", model="mobilenet_v3_small").source == "tflite"
    assert hub.lookup("timm:mobilenetv3_large_100").tag == "mobilenetv3_large_100.ra_in1k"  # best of that name
    assert hub.lookup("torchvision:mobilenet_v2").tag == "mobilenet_v2.IMAGENET1K_V2"
    # paths and URLs are not references; an existing file wins over a catalog name
    assert hub.lookup("weights.pth") is None and hub.lookup("https://x/y.pth") is None
    assert hub.lookup(Path("torchvision")) is None


def test_lookup_errors(tmp_path, monkeypatch):
    with pytest.raises(MobileNetsError, match="did you mean timm:mobilenetv3_large_100.ra_in1k"):
        hub.lookup("timm:mobilenetv3_large_100.ra_in")
    with pytest.raises(MobileNetsError, match="only together with a model"):
        hub.lookup("IMAGENET1K_V1")
    with pytest.raises(MobileNetsError, match=r"no IMAGENET1K_V3 weights for mobilenet_v2 \(it has IMAGENET1K_V1, "):
        hub.lookup("IMAGENET1K_V3", model="mobilenet_v2")
    with pytest.raises(MobileNetsError, match="at width 0.6; widths with published weights: 0.35, 0.5, 0.75, 1, 1.3"):
        create_model("mobilenet_v2", width=0.6, pretrained=True)
    with pytest.raises(MobileNetsError, match="no published weights for lraspp_mobilenet_v3_small"):
        create_model("lraspp_mobilenet_v3_small", pretrained=True)
    with pytest.raises(MobileNetsError, match="not both"):
        create_model("mobilenet_v2", weights="torchvision", pretrained=True)
    with pytest.raises(MobileNetsError, match="not in this version"):
        hub.fetch(hub.CATALOG["torchvision:deeplabv3_mobilenet_v3_large.COCO_WITH_VOC_LABELS_V1"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "torchvision").write_bytes(b"x")
    assert hub.lookup("torchvision", model="mobilenet_v2") is None  # the file of that name


def test_default_is_the_best_published_figure():
    for model in list_models(None, pretrained=True):
        best = hub.default_weights(model)
        same = [w for w in hub.published_for(model, 1.0) if w.mean in (None, hub._IMAGENET_MEAN, hub._HALF)]
        assert best.top1 == max(w.top1 for w in same if w.top1 is not None), model
    # timm's MIIL file scores higher but wants [0, 1] inputs: never what pretrained=True gives
    assert hub.default_weights("mobilenet_v3_large").tag == "mobilenetv3_large_100.ra_in1k"
    # a timm name asks for timm's file of that name
    assert hub.default_weights("mobilenet_v3_small", alias="tf_mobilenetv3_small_100").tag == \
        "tf_mobilenetv3_small_100.in1k"
    assert list_models(pretrained=True) == [m for m in list_models() if hub.published_for(m)]
    assert "ssdlite_mobilenet_v3_large" in list_models(None, pretrained=True)
    assert "lraspp_mobilenet_v3_small" not in list_models(None, pretrained=True)


# ---------------------------------------------------------------------------------------------- aliases


@pytest.mark.parametrize("alias", sorted(a for a in ALIASES if not a.startswith("ssdlite")))
def test_timm_alias_is_timms_network(alias, tmp_path):
    """Each timm name maps to the model, width and options that hold timm's own network's tensors."""
    torch.save(timm.create_model(alias).state_dict(), tmp_path / "w.pth")
    info = inspect_weights(tmp_path / "w.pth")
    name, width, options, tf = resolve_alias(alias)
    assert (info.model, info.width, info.fixed_stem) == (name, width, options.get("fixed_stem", False))
    model = create_model(alias)
    assert (model.config.name, model.config.width, model.config.tf_padding) == (name, width, tf)
    assert model.config.bn_eps == (1e-3 if tf else 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tf=True: the file is read as TF-trained, as the name says
        load_weights(model, tmp_path / "w.pth", tf=tf or None)  # all or nothing: every tensor fits


@pytest.mark.parametrize("alias", ["tf_mobilenetv3_small_100", "mobilenetv3_small_050", "mobilenetv1_100"])
def test_alias_with_weights_reproduces_timm(alias, tmp_path):
    ref = timm.create_model(alias).eval()
    with torch.no_grad():
        for m in ref.modules():  # random BN statistics, so a wrong eps or padding shows
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    ours = create_model(alias, weights=tmp_path / "w.pth").eval()  # tf_*: TF padding + eps from the name
    x = torch.randn(2, 3, 65, 65)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_alias_errors_and_did_you_mean():
    with pytest.raises(MobileNetsError, match="mobilenetv3_large_100 is mobilenet_v3_large width 1"):
        create_model("mobilenetv3_large_100", width=0.5)
    with pytest.raises(MobileNetsError, match="did you mean mobilenetv3_large_100"):
        create_model("mobilenetv3_larg_100")
    assert create_model("mobilenetv2_100", width=1.0, num_classes=3).config.num_classes == 3
    det = create_model("ssdlite320_mobilenet_v3_large", num_classes=5)
    assert (det.config.name, det.config.config) == ("ssdlite_mobilenet_v3_large", "torchvision")


def test_cli_model_name_accepts_aliases():
    import argparse

    from mobilenets.cli.common import model_name

    parse = model_name()
    assert parse("tf_mobilenetv3_small_100") == "tf_mobilenetv3_small_100"
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean .*mobilenetv2_100"):
        parse("mobilenetv2_10")


# --------------------------------------------------------------------------- download against a loopback host


def _hashed(path: Path) -> Path:
    """Rename ``path`` as torchvision names its files: stem-<first 8 hex of the sha256>.pth."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return path.rename(path.with_name(f"{path.stem}-{digest}{path.suffix}"))


@pytest.fixture
def hosted(server, cache, monkeypatch):
    """The catalog's V3-Small entries (torchvision's and timm's tf_*) re-pointed at the loopback server, which
    serves random-weight networks of torchvision and timm in their own file formats; returns (entries by
    name, reference models, requested paths)."""
    base, root, requests = server
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v3_small().eval()
    tf = timm.create_model("tf_mobilenetv3_small_100").eval()
    for net in (tv, tf):
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    torch.save(tv.state_dict(), root / "mobilenet_v3_small.pth")
    tv_file = _hashed(root / "mobilenet_v3_small.pth")
    torch.save(tf.state_dict(), root / "tf_mobilenetv3_small_100.pth")
    tf_file = _hashed(root / "tf_mobilenetv3_small_100.pth")
    entries = {
        "tv": dataclasses.replace(hub.CATALOG["torchvision:mobilenet_v3_small.IMAGENET1K_V1"],
                                  url=f"{base}/{tv_file.name}", sha256_prefix=HASH_IN_NAME.search(tv_file.name)[1]),
        "tf": dataclasses.replace(hub.CATALOG["timm:tf_mobilenetv3_small_100.in1k"],
                                  url=f"{base}/{tf_file.name}", sha256_prefix=HASH_IN_NAME.search(tf_file.name)[1]),
    }
    catalog = {**{k: v for k, v in hub.CATALOG.items() if v.model != "mobilenet_v3_small"},
               **{e.name: e for e in entries.values()}}
    monkeypatch.setattr(hub, "CATALOG", catalog)
    monkeypatch.setattr(hub, "PUBLISHED_WEIGHTS", tuple(catalog.values()))
    return entries, {"tv": tv, "tf": tf}, requests


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_download_check_convert_cache(hosted, capsys, monkeypatch):
    entries, ref, requests = hosted
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: the bar shows
    x = torch.randn(2, 3, 64, 64)
    assert not hub.is_cached(entries["tv"])
    model = create_model("mobilenet_v3_small", weights="IMAGENET1K_V1")
    assert requests == ["/" + entries["tv"].file_name]
    assert entries["tv"].file_name in capsys.readouterr().err  # the tqdm bar, named by the file
    assert hub.is_cached(entries["tv"])
    a, b = _logits(model, x), _logits(ref["tv"], x)
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    # every later use reads the cache: torchvision-style names, the full name, load_weights
    again = create_model("mobilenet_v3_small", weights="torchvision")
    load_weights(create_model("mobilenet_v3_small", bn_eps=1e-3), "torchvision:mobilenet_v3_small.IMAGENET1K_V1")
    assert requests == ["/" + entries["tv"].file_name] and capsys.readouterr().err == ""
    assert torch.equal(_logits(again, x), a)
    # the info names the entry and carries the publisher's preprocessing
    info = inspect_weights("torchvision:mobilenet_v3_small.IMAGENET1K_V1")
    assert info.source == "torchvision:mobilenet_v3_small.IMAGENET1K_V1" and info.format == "torchvision"
    assert info.preprocessing == entries["tv"].preprocessing()


def test_pretrained_true_and_tf_alias(hosted):
    entries, ref, requests = hosted
    x = torch.randn(1, 3, 65, 65)
    # best published figure of the (patched) catalog for V3-Small 1.0: timm's tf_ file (67.918 > 67.668)
    model = create_model("mobilenet_v3_small", pretrained=True)
    assert requests == ["/" + entries["tf"].file_name]
    assert (model.config.tf_padding, model.config.bn_eps) == (True, 1e-3)  # the entry says TF-trained
    a, b = _logits(model, x), _logits(ref["tf"], x)
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    info = inspect_weights("timm:tf_mobilenetv3_small_100.in1k")
    assert info.preprocessing.mean == (0.5, 0.5, 0.5) and info.preprocessing.interpolation == "bilinear"
    # a torchvision name gets torchvision's file; fine-tuning heads work as with any file
    with pytest.warns(UserWarning, match="classifier not loaded: the file has 1000 classes, the model 4"):
        tuned = create_model("mobilenet_v3_small", weights="DEFAULT", num_classes=4)
    assert tuned.config.num_classes == 4 and requests[-1] == "/" + entries["tv"].file_name


def test_convert_by_name_keeps_published_preprocessing(hosted, tmp_path):
    from mobilenets.checkpoint import read_checkpoint
    from mobilenets.weights import convert_weights

    entries, _, _ = hosted
    convert_weights("timm:tf_mobilenetv3_small_100.in1k", tmp_path / "v3.safetensors")
    _, meta = read_checkpoint(tmp_path / "v3.safetensors")
    assert meta.preprocessing == entries["tf"].preprocessing()
    assert meta.extra["converted_from"] == "timm:tf_mobilenetv3_small_100.in1k"
    assert (meta.config.tf_padding, meta.config.bn_eps) == (True, 1e-3)


def test_hash_refusals_cache_nothing(hosted, cache, monkeypatch):
    entries, _, requests = hosted
    bad = dataclasses.replace(entries["tv"], sha256_prefix="00000000")
    with pytest.raises(MobileNetsError, match=r"sha256 mismatch: the published file name says 00000000\.\.\."):
        hub.fetch(bad)
    md5 = dataclasses.replace(entries["tv"], sha256_prefix=None, md5="0" * 32)
    with pytest.raises(MobileNetsError, match="md5 mismatch"):
        hub.fetch(md5)
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing half-written or unverified
    # a good download, then a cached copy that no longer matches: refused, and refresh fetches it again
    path = hub.fetch(entries["tv"])
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(MobileNetsError, match="sha256 mismatch.*delete it or pass --refresh"):
        hub.fetch(entries["tv"])
    assert hub.fetch(entries["tv"], refresh=True) == path
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(entries["tv"].sha256_prefix)
    assert requests.count("/" + entries["tv"].file_name) == 4


def test_a_download_without_a_hash_is_read_before_it_is_cached(hosted, cache, server, capsys):
    """An entry with no published hash (the TF release archives, some Keras files): a download that does not
    read as weights (cut here) is refused and never cached, through the API and `weights --download`; the
    whole file then loads, and a cached copy damaged later says to delete it or refresh."""
    from mobilenets.cli import main

    entries, ref, requests = hosted
    base, root, _ = server
    whole = (root / entries["tv"].file_name).read_bytes()
    (root / "cut.pth").write_bytes(whole[:len(whole) // 2])
    cut = dataclasses.replace(entries["tv"], url=f"{base}/cut.pth", sha256_prefix=None)
    hub.CATALOG[cut.name] = cut  # the fixture's catalog copy
    for call in (lambda: inspect_weights(cut.name), lambda: create_model("mobilenet_v3_small", weights=cut.name)):
        with pytest.raises(MobileNetsError, match=r"torchvision:mobilenet_v3_small.IMAGENET1K_V1 \(http://"
                                                  r".*cut.pth\): not a readable PyTorch weights file"):
            call()
        assert not [p for p in cache.rglob("*") if p.is_file()]
    assert main(["weights", "--download", cut.name]) == 2
    assert "not a readable PyTorch weights file" in capsys.readouterr().err
    assert not [p for p in cache.rglob("*") if p.is_file()] and requests.count("/cut.pth") == 3

    (root / "cut.pth").write_bytes(whole)  # the server mended: the same URL now serves the whole file
    model = create_model("mobilenet_v3_small", weights=cut.name)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_logits(model, x), _logits(ref["tv"], x))
    path = hub.cached_path(cut)
    path.write_bytes(whole[:100])
    with pytest.raises(MobileNetsError, match=r"cached download .* \(delete it or pass --refresh\)$"):
        inspect_weights(cut.name)
    assert inspect_weights(cut.name, refresh=True).model == "mobilenet_v3_small"


def test_weights_command(hosted, capsys):
    from mobilenets.cli import main
    from mobilenets.cli.weights import SOURCES

    assert SOURCES == hub.SOURCES

    entries, _, requests = hosted
    assert main(["weights", "--model", "mobilenet_v3_small"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:-1]}
    assert set(rows) == {entries["tv"].name, entries["tf"].name}
    assert rows[entries["tf"].name][3:] == ["67.918", "top-1", "*", "-"]  # the default, not cached
    assert main(["weights", "--download", "IMAGENET1K_V1", "--model", "mobilenet_v3_small"]) == 0
    assert capsys.readouterr().out.strip() == f"{entries['tv'].name}: {hub.cached_path(entries['tv'])}"
    assert main(["weights", "--model", "tf_mobilenetv3_small_100"]) == 0  # an alias: its model and width
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:-1]}
    assert rows[entries["tv"].name][-1] == "cached" and rows[entries["tf"].name][-1] == "-"
    assert main(["weights", "--download", "IMAGENET1K_V1"]) == 2
    assert "only together with a model" in capsys.readouterr().err
    assert requests == ["/" + entries["tv"].file_name]


def _tgz(path: Path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> None:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:  # a symlink member pointing outside: never followed or written
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)


def test_release_archive_yields_its_tflite(server, cache, pretrained_dir, monkeypatch, tmp_path):
    pytest.importorskip("ai_edge_litert")
    base, root, requests = server
    tflite = (pretrained_dir / "mobilenet_v3_small_1.0_224.uint8.tflite").read_bytes()
    _tgz(root / "v3-small_224_1.0_uint8.tgz", {
        "v3-small_224_1.0_uint8/v3-small_224_1.0_uint8.tflite": tflite,
        "v3-small_224_1.0_uint8/model.ckpt.index": b"checkpoint bytes",
        "../../escape.tflite.txt": b"not extracted",
    }, links=("v3-small_224_1.0_uint8/link.txt",))
    _tgz(root / "empty.tgz", {"readme.txt": b"no weights here"})
    entry = dataclasses.replace(hub.CATALOG["tflite:v3-small_224_1.0_float"], tag="archived",
                                url=f"{base}/v3-small_224_1.0_uint8.tgz")
    empty = dataclasses.replace(entry, tag="empty", url=f"{base}/empty.tgz")
    monkeypatch.setattr(hub, "CATALOG", {**hub.CATALOG, entry.name: entry, empty.name: empty})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # nothing may land in the current folder either

    model = create_model("mobilenet_v3_small", weights="tflite:archived")
    reference = mobilenets.model_from_weights(pretrained_dir / "mobilenet_v3_small_1.0_224.uint8.tflite")[0]
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    path = hub.cached_path(entry)
    assert path.read_bytes() == tflite and path.name == "v3-small_224_1.0_uint8.tflite"
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [path.name]  # the archive itself is dropped
    assert not list(work.iterdir()) and not list(tmp_path.rglob("escape.tflite.txt"))
    create_model("mobilenet_v3_small", weights="tflite:archived")
    assert requests == ["/v3-small_224_1.0_uint8.tgz"]  # the extracted file is the cache

    with pytest.raises(MobileNetsError, match=r"tflite:empty \(.*empty.tgz\): the archive holds 0 .tflite files"):
        hub.fetch(empty)
    (root / "broken.tgz").write_bytes(b"\x1f\x8b" + bytes(200))
    with pytest.raises(MobileNetsError, match="not a readable .tgz archive"):
        hub.fetch(dataclasses.replace(entry, url=f"{base}/broken.tgz"))
    # a flipped byte in the gzip checksum: tarfile alone stops reading before it and would extract the file
    good = (root / "v3-small_224_1.0_uint8.tgz").read_bytes()
    (root / "crc.tgz").write_bytes(good[:-8] + bytes([good[-8] ^ 0xFF]) + good[-7:])
    with pytest.raises(MobileNetsError, match=r"not a readable .tgz archive \(CRC check failed"):
        hub.fetch(dataclasses.replace(entry, url=f"{base}/crc.tgz"), refresh=True)
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [path.name]
    path.write_bytes(tflite[:1000])  # a cached extract damaged later
    with pytest.raises(MobileNetsError, match=r"tflite:archived: cached file .* \(delete it or pass --refresh\)"):
        create_model("mobilenet_v3_small", weights="tflite:archived")


def test_training_accepts_short_names_with_the_backbone(hosted):
    """`train --model mobilenet_v3_small --weights torchvision`: the run's check of its initialisation weights
    resolves the short name with the backbone it builds; and a model built from a catalog name carries the
    publisher's preprocessing in its timm data config."""
    from mobilenets.tasks.base import pretrained_info

    entries, _, requests = hosted
    info = pretrained_info("torchvision", "mobilenet_v3_small", 1.0)
    assert info.model == "mobilenet_v3_small" and info.source == entries["tv"].name
    with pytest.raises(MobileNetsError, match="not mobilenet_v2 width 1"):
        pretrained_info(entries["tv"].name, "mobilenet_v2", 1.0)
    model = create_model("mobilenet_v3_small", pretrained=True)  # timm's tf_ file: [-1, 1] inputs
    assert tuple(model.pretrained_cfg["mean"]) == (0.5, 0.5, 0.5) == tuple(model.pretrained_cfg["std"])
