"""The one error type stages raise for bad params or data, and the wrapper
that turns it into a one-line message and exit status 1."""
from __future__ import annotations

import sys
from typing import Callable


class StageError(Exception):
    """A problem the user can fix: a bad param, a missing or corrupt file."""


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    try:
        main(argv)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted; run the stage again to resume from its last checkpoint", file=sys.stderr)
        raise SystemExit(130) from None
