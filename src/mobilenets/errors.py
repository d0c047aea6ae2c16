"""The one exception type the library raises for bad user input; the CLI prints it as a one-line error."""

__all__ = ["MobileNetsError", "existing_file", "output_file", "one_line", "file_mode"]


class MobileNetsError(Exception):
    """Bad input (a file, an image, a dataset, an option): the message says what and where."""


def existing_file(path, what: str = "file"):
    """``path`` as a :class:`~pathlib.Path` to an existing regular file, else a one-line
    :class:`MobileNetsError` saying it is missing or a directory (``what`` names the expected file)."""
    from pathlib import Path

    path = Path(path).expanduser()
    if path.is_dir():
        raise MobileNetsError(f"{path}: is a directory, not {what}")
    if not path.is_file():
        raise MobileNetsError(f"{path}: " + ("not a regular file (a device, pipe or socket)" if path.exists()
                                             else "no such file"))
    return path


def output_file(path, what: str = "output file"):
    """``path`` as a :class:`~pathlib.Path` a file can be written to (its missing folders created later), else
    a one-line :class:`MobileNetsError`: the path is a directory, or one of its parents is a file."""
    from pathlib import Path

    path = Path(path).expanduser()
    if not path.name or path.is_dir():
        raise MobileNetsError(f"{path}: is a directory; give a file name for the {what}")
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise MobileNetsError(f"{path}: cannot write the {what} there: {parent} is not a folder")
            break
    return path


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with every control character (newlines, terminal escape codes) shown escaped, so it prints as
    one inert line; cut at a word boundary after ``limit`` characters if given."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))
    if limit is not None and len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."
    return text


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the process umask (0o644 under the usual 022): what
    files written through a temp file (``tempfile.mkstemp`` makes them 0o600) are given before their rename."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which would race
    with files other threads create): /proc on Linux, else the set-and-restore fallback."""
    import os
    from pathlib import Path

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def printable_records(record) -> bool:
    """A ``logging`` filter (handlers take plain callables) escaping control characters in each line's message:
    file and class names from a data folder may hold newlines or terminal escape codes, which a log line must
    show, not execute. Tracebacks are formatted apart and left as they are."""
    message = record.getMessage()
    clean = one_line(message)
    if clean != message:
        record.msg, record.args = clean, None
    return True
