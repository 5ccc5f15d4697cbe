import os

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


def pytest_collection_modifyitems(items):
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
