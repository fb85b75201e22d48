"""User-facing errors and the CLI wrapper that turns them into one clear line."""

import logging
import sys


class OteError(Exception):
    """A problem with the user's input (file, template, flag). Printed as one line, no traceback."""


_PREFIX = "OteError: "


def _one_line(exc):
    text = str(exc).strip()
    # Errors raised inside DataLoader workers are re-raised with the worker's traceback in the
    # message; the last line then reads "...OteError: <message>".
    last = text.splitlines()[-1] if text else type(exc).__name__
    if _PREFIX in last:
        last = last.split(_PREFIX, 1)[1]
    return last


def run_cli(main, argv=None):
    """Run ``main(argv)``; OteError (also when raised in a DataLoader worker) exits with code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rc = main(argv)
    except OteError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a worker's OteError comes back as a plain Exception
        if _PREFIX in str(exc):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(rc or 0)
