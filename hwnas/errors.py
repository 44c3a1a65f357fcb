"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class HwnasError(Exception):
    """An error caused by user input (a file, a field, a setting), not by a bug."""


def run_script(main, prefix: str) -> None:
    """A benchmark or tool script's entry point: exit with ``main()``'s return code, or print a
    :class:`HwnasError` as one line ``PREFIX: message`` on stderr and exit 2 (no traceback)."""
    import sys

    try:
        sys.exit(main())
    except HwnasError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        sys.exit(2)
