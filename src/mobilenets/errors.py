"""The one exception type the library raises for bad user input; the CLI prints it as a one-line error."""

__all__ = ["MobileNetsError"]


class MobileNetsError(Exception):
    """Bad input (a file, an image, a dataset, an option): the message says what and where."""
