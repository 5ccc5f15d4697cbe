"""Drive the real MLflow UI in headless Chromium (Playwright, Debian's chromium):
the runs table with metric columns, and the Compare page of selected runs.

    python ops/mlflow_ui.py URL --runs NAME ... [--metrics fcd ...] [--out docs/img]

URL is what `make ui` prints. Saves `runs.png` (the table with the metric
columns added) and `compare.png` (the runs selected, then Compare) under
--out (bench/first_run.py takes the docs' runs.png with the same functions). `tests/test_grid.py` uses the same
functions to check the rendered DOM.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

# Chromium on a machine without network or display: what the flags switch off
# would otherwise try to reach Google's hosts at every start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000


def chromium() -> str | None:
    return next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)


def open_runs(page, url: str, runs: list[str]) -> None:
    """The experiment's runs page, every run in `runs` listed, the assistant panel closed."""
    page.goto(url)
    for name in runs:
        page.get_by_text(name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def add_columns(page, keys: list[str]) -> None:
    """Tick metric (or param) columns in the table's Columns menu, as a user would."""
    page.get_by_role("button", name="Columns", exact=True).click()
    search = page.get_by_placeholder("Search columns")
    for key in keys:
        search.fill(key)
        # The menu highlights matches inside longer names too (fcd in evaluate.fcd_max): the exact title.
        page.locator("[class*=tree-title]").filter(has_text=re.compile(rf"^{re.escape(key)}$")).first.click()
    page.keyboard.press("Escape")
    for key in keys:
        page.get_by_role("columnheader", name=key).first.wait_for(timeout=TIMEOUT_MS)


def table(page) -> tuple[list[str], list[str]]:
    """(column headers, the text of each row) as rendered. The grid draws its pinned
    columns (the run name) and the others as separate rows of one row index: joined."""
    headers = [h.inner_text().strip() for h in page.get_by_role("columnheader").all()]
    rows: dict[str, list[str]] = {}
    for r in page.get_by_role("row").all():
        if r.get_attribute("row-index") is not None:  # data rows; the header rows have none
            rows.setdefault(r.get_attribute("aria-rowindex"), []).append(r.inner_text())
    return [h for h in headers if h], ["\n".join(parts) for parts in rows.values()]


def compare(page, runs: list[str]) -> None:
    """Select the runs' rows, then Compare: MLflow's side-by-side page."""
    for name in runs:
        page.get_by_role("row").filter(has_text=name).get_by_role("checkbox").first.click()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text(f"Comparing {len(runs)} Runs", exact=False).first.wait_for(timeout=TIMEOUT_MS)


def plot_metrics(page, metrics: list[str]) -> None:
    """On the Compare page: the parallel-coordinates plot over `metrics` instead of
    the one MLflow picks (the first metric by name)."""
    box = page.locator("[class*=select-multiple]").nth(1)  # Parameters, then Metrics
    for remove in box.locator("[class*=selection-item-remove]").all():
        remove.click()
    box.click()
    for key in metrics:
        page.keyboard.type(key)
        page.locator(f"[class*=select-item-option][title='{key}']").first.wait_for(timeout=TIMEOUT_MS)
        page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def main(argv: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--metrics", nargs="+", default=["fcd", "classifier_score_ratio", "quality_gate_passed"])
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        open_runs(page, args.url, args.runs)
        add_columns(page, args.metrics)
        page.screenshot(path=str(args.out / "runs.png"))
        compare(page, args.runs)
        plot_metrics(page, args.metrics[:2])
        page.wait_for_timeout(2000)  # the plot redraws after the page settles
        page.screenshot(path=str(args.out / "compare.png"))
        browser.close()
    print(f"mlflow_ui: {args.out / 'runs.png'}, {args.out / 'compare.png'}")


if __name__ == "__main__":
    main()
