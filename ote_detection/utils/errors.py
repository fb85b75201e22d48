"""User-facing errors and the CLI wrapper that turns them into one clear line."""

import logging
import sys


# internal path (a temporary file the user never made) -> what messages name instead (see ``show_as``)
_SHOWN_AS = {}


def show_as(internal, shown):
    """From now on, messages (``OteError`` text and the package's log records) that name the path ``internal``
    name ``shown`` instead: e.g. the temporary COCO json a Datumaro dataset is converted into is named by the
    dataset's folder and format (``formats/convert.py``)."""
    _SHOWN_AS[str(internal)] = str(shown)
    _install_log_filter()


def user_text(text):
    """``text`` with every internal path registered by ``show_as`` replaced by what the user knows it as."""
    text = str(text)
    for internal in sorted(_SHOWN_AS, key=len, reverse=True):
        if internal in text:
            text = text.replace(internal, _SHOWN_AS[internal])
    return text


class _UserPaths(logging.Filter):
    """Rewrites a log record's message with ``user_text`` (a logger filter: it sees the records of its logger)."""

    def filter(self, record):
        if _SHOWN_AS:
            message = record.getMessage()
            shown = user_text(message)
            if shown != message:
                record.msg, record.args = shown, ()
        return True


_FILTER = _UserPaths()


def _install_log_filter():
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "ote_detection" and isinstance(logger, logging.Logger) \
                and _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class OteError(Exception):
    """A problem with the user's input (file, template, flag). Printed as one line, no traceback. Internal
    paths registered with ``show_as`` read as what the user gave."""

    def __str__(self):
        return user_text(super().__str__())

    label = "error"  # the line's first word
    exit_code = 2
    quiet = False  # True: exit with ``exit_code`` without a line (another process of the job says it)


class TrainingStopped(OteError):
    """Training stopped at an iteration boundary on a stop signal (SIGTERM), after saving a checkpoint the
    next start continues from. Exit code 143 (128 + SIGTERM), as a process ended by SIGTERM."""

    label = "stopped"
    exit_code = 143

    def __init__(self, message, epoch=None, epoch_iter=None):
        super().__init__(message)
        self.epoch, self.epoch_iter = epoch, epoch_iter


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
        if not exc.quiet:
            print(f"{exc.label}: {_one_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a worker's OteError comes back as a plain Exception
        if _PREFIX in str(exc):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(rc or 0)
