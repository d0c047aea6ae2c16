"""The one exception type the library raises for bad user input; the CLI prints it as a one-line error."""

__all__ = ["MobileNetsError", "existing_file", "output_file", "one_line"]


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
        raise MobileNetsError(f"{path}: no such file")
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
