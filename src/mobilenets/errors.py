"""The one exception type the library raises for bad user input; the CLI prints it as a one-line error."""

__all__ = ["MobileNetsError", "existing_file"]


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
