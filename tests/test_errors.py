"""pipeline.errors.run_stage: a stage's stop as one line and an exit status, the line
saying the stage resumes only where it does (train)."""
from __future__ import annotations

import signal
import sys

import pytest

from pipeline import errors


@pytest.fixture(autouse=True)
def sigterm_handler_restored():
    # run_stage installs its SIGTERM handler; the test process keeps its own.
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def stops_with(exc: BaseException):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize(("exc", "code", "word"), [(KeyboardInterrupt(), 130, "interrupted"),
                                                    (errors.Terminated(), 143, "terminated (SIGTERM)")])
@pytest.mark.parametrize("resumes", [False, True])
def test_a_stopped_stage_says_so_in_one_line_and_resumes_only_where_it_does(capsys, monkeypatch, exc, code, word,
                                                                            resumes):
    # The stage's module says whether it resumes, as pipeline/train.py does.
    monkeypatch.setattr(sys.modules[__name__], "RESUMES_FROM_CHECKPOINT", resumes, raising=False)
    with pytest.raises(SystemExit) as stop:
        errors.run_stage(stops_with(exc), [])
    assert stop.value.code == code
    line = capsys.readouterr().err.strip()
    assert line == f"error: {word}; run the stage again" + (errors.RESUMES if resumes else "")


def test_a_stage_error_is_one_line_and_exit_status_1(capsys):
    with pytest.raises(SystemExit) as stop:
        errors.run_stage(stops_with(errors.StageError("train.steps: must be at least 1")), [])
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip() == "error: train.steps: must be at least 1"


def test_train_is_the_stage_that_resumes():
    from pipeline import evaluate, export, prepare, train

    assert train.RESUMES_FROM_CHECKPOINT is True
    assert not any(hasattr(m, "RESUMES_FROM_CHECKPOINT") for m in (prepare, evaluate, export))
