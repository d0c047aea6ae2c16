"""Where weights come from: a local path, or an http(s) URL downloaded once into a cache.

The cache is ``$MOBILENETS_CACHE`` or ``~/.cache/mobilenets``; a file is stored under a folder named by the
URL's hash, as the URL's sanitised last path segment (:func:`source_name`), so two URLs never collide and no
URL text ever becomes a path. A download goes to a temp file in the cache folder and is renamed into place
only when it is complete (as long as its ``Content-Length``), is not an HTML page, matches its hash (if one
was given) and **parsed as weights** (:func:`open_source` commits it after the reader succeeded): a cut,
corrupted or wrong download never looks cached. A cached file that fails to read is reported as the cached
download it is ("delete it or pass --refresh"); ``refresh=True`` downloads again. Every read has a timeout
and the whole download a deadline (a server dripping bytes cannot hold it open). Give the expected hash as
``sha256=...`` or as a URL fragment, ``https://.../w.pth#sha256=...``. A download shows a tqdm progress bar
on stderr when it is a terminal. Published files by name (``"timm:mobilenetv3_large_100.ra_in1k"``) are
:mod:`~mobilenets.weights.hub`'s, fetched through here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import MobileNetsError, existing_file, file_mode, one_line

__all__ = ["resolve_source", "open_source", "Source", "cache_dir", "cache_path", "sha256sum", "source_name", "is_url",
           "DEFAULT_TIMEOUT", "DEFAULT_DEADLINE", "MAX_DOWNLOAD_BYTES"]

DEFAULT_TIMEOUT = 60.0  # seconds any one network operation may wait
DEFAULT_DEADLINE = 900.0  # seconds a whole download may take
MAX_DOWNLOAD_BYTES = 2 << 30  # no MobileNet file comes near this; a server streaming forever stops here


def cache_dir() -> Path:
    return Path(os.environ.get("MOBILENETS_CACHE") or Path.home() / ".cache" / "mobilenets")


def cache_path(url: str) -> Path:
    """Where the download of ``url`` (fragment ignored) is cached: a folder named by the URL's hash, the file
    named by :func:`source_name`, so no URL text ever becomes a path."""
    url = url.partition("#")[0]
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16] / source_name(url)


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_url(source) -> bool:
    return isinstance(source, str) and urllib.parse.urlparse(source).scheme.lower() in ("http", "https")


def source_name(source: str | os.PathLike) -> str:
    """The base name of ``source``, safe as a file name in the current folder: a path's own name; for a URL
    the last segment of its path (no query, no fragment), percent-decoded, with every character outside
    ``A-Z a-z 0-9 . _ + -`` replaced by ``_`` and no leading dot (``"weights"`` if nothing is left)."""
    text = os.fspath(source)
    if is_url(text):
        segment = urllib.parse.unquote(urllib.parse.urlparse(text).path).replace("\\", "/").rsplit("/", 1)[-1]
        segment = re.sub(r"[^A-Za-z0-9._+-]", "_", segment).lstrip(".")[:128]
        return segment or "weights"
    return Path(text).name or "weights"


def _split_hash(source: str, sha256: str | None) -> tuple[str, str | None]:
    url, _, fragment = source.partition("#")
    if fragment.startswith("sha256="):
        frag_hash = fragment[len("sha256="):].lower()
        if sha256 and sha256.lower() != frag_hash:
            raise MobileNetsError(f"{source}: the URL's sha256 and the sha256 argument differ")
        sha256 = frag_hash
    return url, _check_hash(sha256)


def _check_hash(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise MobileNetsError(f"sha256 must be 64 hexadecimal digits, got {one_line(repr(sha256), 80)}")
    return sha256.lower()


@dataclass(frozen=True)
class Source:
    """A weights file to read: ``path`` now, ``final`` once the read succeeded (the cache entry of a fresh
    download; the path itself otherwise); ``label`` names it in messages."""

    path: Path
    label: str
    final: Path
    url: str | None = None
    cached: bool = False


def _text(source) -> str:
    try:
        return os.fsdecode(source)  # a str, or bytes / a path decoded as the file system does
    except TypeError:
        raise MobileNetsError(f"a weights source must be a path or an http(s) URL, got {type(source).__name__}") \
            from None


def _seconds(value, what: str) -> float:
    """``value`` as a positive, finite number of seconds, else a :class:`MobileNetsError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise MobileNetsError(f"{what} must be a positive number of seconds, got {one_line(repr(value), 40)}")
    return float(value)


@contextmanager
def open_source(source: str | os.PathLike, *, sha256: str | None = None, refresh: bool = False,
                timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE,
                progress: bool | None = None) -> Iterator[Source]:
    """The file for ``source`` (a path, or a URL fetched into the cache), for the ``with`` block to read.

    A fresh download enters the cache only if the block completes (the reader accepted it); a cached file the
    block rejects comes back as a :class:`MobileNetsError` saying it is a cached download to delete or
    ``refresh``. A download shows a tqdm progress bar on stderr when that is a terminal (``progress``: True
    always, False never), so logs and piped output get only the result or the one-line error. Raises
    :class:`MobileNetsError` for a missing file, a directory, a failed, cut or timed-out download, an HTML page
    or a hash mismatch.
    """
    text = _text(source)
    timeout, deadline = _seconds(timeout, "timeout"), _seconds(deadline, "deadline")
    if not is_url(text):
        scheme = urllib.parse.urlparse(text).scheme
        if "://" in text and len(scheme) > 1:
            raise MobileNetsError(f"{one_line(text, 200)}: unsupported URL scheme {scheme!r} (http and https only)")
        path = existing_file(text, "a weights file")
        sha256 = _check_hash(sha256)
        if sha256 and sha256sum(path) != sha256:
            raise MobileNetsError(f"{path}: sha256 mismatch (expected {sha256})")
        yield Source(path, str(path), path)
        return
    url, sha256 = _split_hash(text, sha256)
    target = cache_path(url)
    folder = target.parent
    if not refresh and target.is_file() and (sha256 is None or sha256sum(target) == sha256):
        try:
            yield Source(target, f"cached download {target} of {url}", target, url, cached=True)
        except MobileNetsError as e:
            raise MobileNetsError(f"{e} (delete it or pass --refresh)") from None
        return
    tmp = _download(url, sha256, folder, timeout=timeout, deadline=deadline, progress=progress)
    try:
        yield Source(tmp, url, target, url)
        os.chmod(tmp, file_mode())  # mkstemp's 0600: the cache gets open()'s mode under the umask
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def resolve_source(source: str | os.PathLike, *, sha256: str | None = None, refresh: bool = False,
                   timeout: float = DEFAULT_TIMEOUT, deadline: float = DEFAULT_DEADLINE) -> Path:
    """A local file for ``source``: the path itself, or the cached download of an http(s) URL (cached only if
    its signature is a weights format this library reads; see :func:`open_source`)."""
    from .formats import detect_format

    with open_source(source, sha256=sha256, refresh=refresh, timeout=timeout, deadline=deadline) as src:
        detect_format(src.path, src.label)
    return src.final


# ------------------------------------------------------------------------------------------------ download


class _Watchdog:
    """Shuts down every socket of a download when its deadline passes, which ends any read blocked on it."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    def watched(cls):
        class Watched(cls):
            def connect(self):
                super().connect()
                watchdog.watch(self.sock)

        return Watched

    class Http(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kw):
            return super().do_open(watched(http_class), req, **kw)

    class Https(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kw):
            return super().do_open(watched(http_class), req, **kw)

    class Redirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if urllib.parse.urlparse(newurl).scheme.lower() not in ("http", "https"):
                raise urllib.error.HTTPError(newurl, code, "redirect to a non-http(s) URL refused", headers, fp)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(Http, Https, Redirect)


def _progress_bar(url: str, total: int | None, enabled: bool | None):
    from tqdm import tqdm

    if enabled is None:
        enabled = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=source_name(url),
                disable=not enabled, leave=False, file=sys.stderr)


def _download(url: str, sha256: str | None, folder: Path, *, timeout: float, deadline: float,
              progress: bool | None = None) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".download.", suffix=".part", dir=folder)
    except OSError as e:
        raise MobileNetsError(f"cannot use the download cache {cache_dir()} ({one_line(e, 160)})") from None
    tmp = Path(tmp)
    done = False
    with _Watchdog(deadline) as watchdog:
        try:
            with os.fdopen(fd, "wb") as out, _opener(watchdog).open(url, timeout=timeout) as response:
                kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if kind in ("text/html", "application/xhtml+xml"):
                    raise MobileNetsError(f"{url}: the server sent an HTML page ({kind}), not a weights file")
                length = response.headers.get("Content-Length", "").strip()
                expected = int(length) if length.isdigit() else None
                if expected is not None and expected > MAX_DOWNLOAD_BYTES:
                    raise MobileNetsError(f"{url}: {expected} bytes is larger than any weights file this library "
                                          f"reads (limit {MAX_DOWNLOAD_BYTES})")
                received = 0
                with _progress_bar(url, expected, progress) as bar:
                    while chunk := response.read1(1 << 16):
                        received += len(chunk)
                        if received > MAX_DOWNLOAD_BYTES:
                            raise MobileNetsError(f"{url}: download larger than {MAX_DOWNLOAD_BYTES} bytes; "
                                                  "stopped")
                        out.write(chunk)
                        bar.update(len(chunk))
                if watchdog.expired:
                    raise TimeoutError
                if expected is not None and received != expected:
                    raise MobileNetsError(f"{url}: download incomplete: received {received} of the {expected} "
                                          "bytes announced (nothing cached)")
                out.flush()
                os.fsync(out.fileno())
            if sha256 is not None and (got := sha256sum(tmp)) != sha256:
                raise MobileNetsError(f"{url}: sha256 mismatch (expected {sha256}, got {got})")
            done = True
        except MobileNetsError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            if watchdog.expired:
                raise MobileNetsError(f"{url}: download took longer than its {deadline:g} s deadline "
                                      "(nothing cached)") from None
            reason = e.reason if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError) \
                else e
            raise MobileNetsError(f"{url}: download failed ({one_line(reason, 160) or type(e).__name__})") \
                from None
        finally:
            if not done:
                tmp.unlink(missing_ok=True)
    return tmp
