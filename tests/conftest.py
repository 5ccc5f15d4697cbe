import fcntl
import json
import os
from pathlib import Path

import pytest

import system_deps

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MISSING = pytest.StashKey[dict]()


def pytest_configure(config):
    # One marker per Debian package, from system_deps.PACKAGES.
    for name, pkg in system_deps.PACKAGES.items():
        config.addinivalue_line("markers", f"{name}: needs Debian's {name} ({pkg.use}); skipped without it, "
                                           "an error where CI=true")
    config.stash[MISSING] = system_deps.missing()


def pytest_report_header(config):
    return system_deps.header(config.args, config.invocation_params.dir, config.rootpath)


def _missing_reason(item) -> str | None:
    gone = item.config.stash[MISSING]
    names = [name for name in system_deps.PACKAGES if name in gone and item.get_closest_marker(name)]
    return system_deps.reason(names, gone) if names else None


# The files in the order they start (`make test` runs with --no-loadscope-reorder): longest
# first, by their measured worker time, so that the short files fill the end and no worker
# is left alone with a long one while the other idles. Files not named go last.
LONGEST_FIRST = ("test_team.py", "test_experiments.py", "test_train_stage.py", "test_grid.py",
                 "test_serving.py", "test_pythons.py", "test_multi_worker.py", "test_gan.py",
                 "test_serving_conditional.py", "test_train.py", "test_conditional_champion.py",
                 "test_promotion.py", "test_stacked.py", "test_tracking.py", "test_evaluate.py",
                 "test_metrics.py", "test_evaluate_conditional.py", "test_conditional.py")


def _start_order(item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items):
    items.sort(key=_start_order)  # stable: each file's own order is kept
    for item in items:
        # An end-to-end test runs real processes: it is slow too, so `-m "not slow"` is the unit tier.
        if item.get_closest_marker("e2e") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        # A test that needs Chromium drives a browser: `-m "not browser"` leaves it out.
        if item.get_closest_marker("chromium") and not item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.browser)
        reason = _missing_reason(item)
        if reason and not system_deps.in_ci():
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # In CI a missing package fails its tests, before their fixtures start anything:
    # a skip there would count as a pass.
    reason = _missing_reason(item)
    if reason and system_deps.in_ci():
        pytest.fail(reason, pytrace=False)


def _suite_dir(tmp_path_factory) -> Path:
    """A folder that every worker of this run of the suite shares (and no other run)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def quick_judge(tmp_path_factory) -> tuple[Path, dict]:
    """A judge trained on MNIST's first 12,000 training images for 3 epochs (weaker than
    the stage's, quicker), and its report on the first 2,000 test images: (file, report).
    Trained once per run of the suite, by the first worker that asks, under a file lock;
    the other workers load the file."""
    folder = _suite_dir(tmp_path_factory) / "quick-judge"
    folder.mkdir(exist_ok=True)
    path, report_path = folder / "judge.keras", folder / "report.json"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not report_path.exists():
            from defaults import judge as judge_params
            from pipeline import data, judge

            mnist = data.load_pypi()[0]
            sub = data.Mnist(mnist.x_train[:12000], mnist.y_train[:12000], mnist.x_test[:2000], mnist.y_test[:2000])
            model, report = judge.train(sub, judge_params(epochs=3, width=8))
            model.save(path)
            report_path.write_text(json.dumps(report))  # last: it marks the judge as whole
    return path, json.loads(report_path.read_text())
