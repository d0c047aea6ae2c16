"""Where weights come from: a local path, or an http(s) URL downloaded once into a cache.

The cache is ``$MOBILENETS_CACHE`` or ``~/.cache/mobilenets``; a file is stored under a folder named by the
URL's hash, so two URLs never collide. A download goes to a temp file in the cache folder and is renamed
into place only when complete and (if a hash was given) verified: an interrupted or corrupted download never
looks cached. Give the expected hash as ``sha256=...`` or as a URL fragment, ``https://.../w.pth#sha256=...``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import MobileNetsError, existing_file

__all__ = ["resolve_source", "cache_dir", "sha256sum"]


def cache_dir() -> Path:
    return Path(os.environ.get("MOBILENETS_CACHE") or Path.home() / ".cache" / "mobilenets")


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split_hash(source: str, sha256: str | None) -> tuple[str, str | None]:
    url, _, fragment = source.partition("#")
    if fragment.startswith("sha256="):
        frag_hash = fragment[len("sha256="):].lower()
        if sha256 and sha256.lower() != frag_hash:
            raise MobileNetsError(f"{source}: the URL's sha256 and the sha256 argument differ")
        sha256 = frag_hash
    return url, sha256.lower() if sha256 else None


def resolve_source(source: str | os.PathLike, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """A local file for ``source``: the path itself, or the cached download of an http(s) URL.

    Raises :class:`MobileNetsError` for a missing file, a directory, a failed download or a hash mismatch.
    """
    text = os.fspath(source)
    if urllib.parse.urlparse(text).scheme in ("http", "https"):
        return _download(*_split_hash(text, sha256), timeout=timeout)
    path = existing_file(text, "a weights file")
    if sha256 and sha256sum(path) != sha256.lower():
        raise MobileNetsError(f"{path}: sha256 mismatch (expected {sha256})")
    return path


def _download(url: str, sha256: str | None, *, timeout: float) -> Path:
    name = Path(urllib.parse.urlparse(url).path).name or "weights"
    folder = cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]
    target = folder / name
    if target.is_file():
        if sha256 is None or sha256sum(target) == sha256:
            return target
        target.unlink()  # a stale or corrupted cache entry: fetch again
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and (got := sha256sum(Path(tmp))) != sha256:
            raise MobileNetsError(f"{url}: sha256 mismatch (expected {sha256}, got {got})")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise MobileNetsError(f"{url}: download failed ({getattr(e, 'reason', e)})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target
