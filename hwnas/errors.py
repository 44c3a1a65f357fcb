"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class HwnasError(Exception):
    """An error caused by user input (a file, a field, a setting), not by a bug."""
