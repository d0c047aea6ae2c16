"""Which kind of file a weights file is, from its full signature (never from its name or a single byte).

==============  ==================================================================================
kind            signature
==============  ==================================================================================
``h5``          the 8-byte HDF5 magic ``\\x89HDF\\r\\n\\x1a\\n`` at offset 0
``tflite``      the FlatBuffer file identifier ``TFL3`` at offset 4, after a root offset inside the file
``torch``       a zip archive (``PK\\x03\\x04``: ``torch.save``'s default) or a pickle stream: the PROTO
                opcode ``\\x80``, a protocol 2..5, then a valid pickle opcode (legacy ``torch.save``)
``safetensors`` an 8-byte little-endian header length N with 8 + N inside the file, then N bytes that
                parse as a JSON object of tensor entries (``dtype``, ``shape``, ``data_offsets``)
==============  ==================================================================================

The safetensors check parses the header, so a header length whose first byte happens to be ``0x80`` (one
in 32 of the 8-byte-aligned lengths safetensors writes) is not mistaken for a pickle.
"""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

from ..errors import MobileNetsError

__all__ = ["detect_format", "exported_model_kind", "KINDS"]

KINDS = ("h5", "tflite", "torch", "safetensors")
_HDF5 = b"\x89HDF\r\n\x1a\n"
_ZIP = b"PK\x03\x04"
_PICKLE_OPCODES = frozenset(op.code.encode("latin-1") for op in pickletools.opcodes)
_MAX_HEADER = 100 << 20  # the safetensors library refuses larger headers too


def _is_pickle(head: bytes) -> bool:
    return len(head) >= 3 and head[:1] == b"\x80" and 2 <= head[1] <= 5 and head[2:3] in _PICKLE_OPCODES


def _safetensors_header(f, size: int, head: bytes) -> str | None:
    """"ok" for a parseable safetensors header, a reason if it looks like one but is broken, None if not one."""
    if len(head) < 9:
        return None
    n = int.from_bytes(head[:8], "little")
    if not 2 <= n <= _MAX_HEADER or head[8:9] != b"{":
        return None
    if n > size - 8:
        return f"cut short: its header alone is {n} bytes, the file {size}"
    f.seek(8)
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                return "its __metadata__ is not a map of strings"
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
                and isinstance(entry.get("shape"), list) and isinstance(entry.get("data_offsets"), list)):
            return f"its header entry {key!r} is not a tensor description"
    return "ok"


def detect_format(path: Path, label: str | None = None) -> str:
    """One of :data:`KINDS` for the file at ``path``, else a one-line :class:`MobileNetsError` (``label``
    names the file in messages; default the path)."""
    label = label or str(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
        if not head:
            raise MobileNetsError(f"{label}: empty file")
        if head.startswith(_HDF5):
            return "h5"
        if head[4:8] == b"TFL3" and 8 <= int.from_bytes(head[:4], "little") < size:
            return "tflite"
        if head.startswith(_ZIP):
            return "torch"
        verdict = _safetensors_header(f, size, head)
    if verdict == "ok":
        return "safetensors"
    if verdict is not None:
        raise MobileNetsError(f"{label}: not a readable safetensors file ({verdict})")
    if _is_pickle(head):
        return "torch"
    if _is_executorch(head):
        raise MobileNetsError(f"{label}: an exported ExecuTorch program, not a weights file")
    if head.lstrip()[:1] == b"<":
        raise MobileNetsError(f"{label}: an HTML or XML document, not a weights file")
    raise MobileNetsError(f"{label}: not a weights file this library reads (safetensors, PyTorch .pth/.pt, "
                          "Keras .h5, TFLite .tflite)")


def _is_executorch(head: bytes) -> bool:
    """ExecuTorch's .pte: a FlatBuffer whose file identifier (offset 4) is "ET" and a 2-digit schema version."""
    return len(head) >= 8 and head[4:6] == b"ET" and head[6:8].isdigit()


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``): a zip holding ``<root>/code/__torch__/...`` sources, which
    ``torch.save``'s archives (data.pkl, data/<n>) never hold."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/__torch__/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _is_onnx(path: Path) -> bool:
    """An ONNX model: the protobuf parses as a ``ModelProto`` with an IR version and graph nodes (checked with
    the ``onnx`` package when installed; without it no file is called ONNX)."""
    try:
        import onnx
    except ImportError:
        return False
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises several types for bytes that are not a model
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0


def _has_mobilenets_metadata(data: bytes) -> bool:
    """A TFLite file with the ``metadata`` entry ``mobilenets`` that exports write (mobilenets.export.runtimes)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return False
    try:
        model = schema.Model.GetRootAs(data, 0)
        return any(model.Metadata(i).Name() == b"mobilenets" for i in range(model.MetadataLength()))
    except Exception:  # noqa: BLE001 - a damaged flatbuffer: not ours
        return False


def exported_model_kind(path: Path) -> str | None:
    """The deployment format of a file that holds an exported model rather than weights to train or convert:
    "ONNX", "ExecuTorch", "TorchScript" or "TFLite" (a TFLite file written by ``mobilenets export``; published
    TFLite files are weights this library reads). None for anything else. Used to name the file in errors
    ("m.onnx: an exported ONNX model, not a checkpoint")."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if _is_executorch(head):
        return "ExecuTorch"
    if head.startswith(_ZIP):
        return "TorchScript" if _is_torchscript(path) else None
    if head[4:8] == b"TFL3":
        return "TFLite" if _has_mobilenets_metadata(path.read_bytes()) else None
    if head[:1] == b"\x08":  # protobuf field 1 (ModelProto.ir_version), varint: parse only files no reader takes
        try:
            detect_format(path)
        except MobileNetsError:
            return "ONNX" if _is_onnx(path) else None
    return None
