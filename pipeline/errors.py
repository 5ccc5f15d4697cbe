"""The one error type stages raise for bad params or data, and the wrapper
that turns it into a one-line message and an exit status: 1 for a StageError,
130 for Ctrl-C (SIGINT), 143 for SIGTERM (`kill`, `dvc queue kill`).

SIGTERM is raised as `Terminated`, a KeyboardInterrupt, so that it unwinds
exactly as Ctrl-C does: the MLflow run is marked FAILED and the last
checkpoint is kept."""
from __future__ import annotations

import signal
import sys
from typing import Callable


RESUMES = " (it resumes from its last checkpoint)"


class StageError(Exception):
    """A problem the user can fix: a bad param, a missing or corrupt file."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an exception in the main thread."""


def _terminate(signum, frame):
    # One is enough: a second must not cut short the clean-up the first started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """`main(argv)`, its errors as one line and an exit status. A stage whose module sets
    RESUMES_FROM_CHECKPOINT (train) picks up where it stopped when run again, and its
    stop's line says so."""
    resumes = getattr(sys.modules.get(main.__module__), "RESUMES_FROM_CHECKPOINT", False)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main(argv)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt as exc:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"error: {how}; run the stage again{RESUMES if resumes else ''}", file=sys.stderr)
        raise SystemExit(code) from None
