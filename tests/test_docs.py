"""The docs site builds strictly, and every pointer to it (from code, params,
recipes, the Makefile and the README) names a page and a section that exist."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Where pointers to the docs live: everything a maintainer reads besides the docs.
SOURCES = ("pipeline", "serving", "ops", "bench", "tests", "recipes")
TOP_FILES = ("params.yaml", "dvc.yaml", "Makefile", "pyproject.toml", "mkdocs.yml")
POINTER = re.compile(r"docs/([\w/.-]+\.md)(?:#([\w-]+))?")
README_LINK = re.compile(r"\]\(((?!https?:|#)[^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
README_MAX_LINES = 150


def anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the page's headings (Python-Markdown's toc slugify)."""
    ids, fenced = set(), False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.+?)\s*#*$", line)):
            text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", m.group(1))
            ids.add(slugify(text, "-"))
    return ids


def pointer_files() -> list[Path]:
    files = [ROOT / f for f in TOP_FILES]
    for folder in SOURCES:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".yaml", ".sh", ".md"}]
    return [f for f in files if f.is_file() and f.resolve() != Path(__file__).resolve()]


def broken(page_ref: str, anchor: str | None) -> str | None:
    page = DOCS / page_ref
    if not page.is_file():
        return f"no page docs/{page_ref}"
    if anchor and anchor not in anchors(page):
        return f"docs/{page_ref} has no section #{anchor} (it has: {sorted(anchors(page))})"
    return None


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                           "--config-file", str(ROOT / "mkdocs.yml")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site/index.html").is_file() and (tmp_path / "site/serving/index.html").is_file()


def test_every_pointer_to_the_docs_names_a_page_and_section_that_exist():
    problems, seen = [], 0
    for f in pointer_files():
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            for m in POINTER.finditer(line):
                if m.group(1).startswith("results/") and m.group(1) != "results/index.md":
                    continue  # a bench names the page it writes; it need not exist yet
                seen += 1
                if why := broken(m.group(1), m.group(2)):
                    problems.append(f"{f.relative_to(ROOT)}:{n}: {why}")
    assert seen >= 10, "the pointer pattern found almost nothing: has the format changed?"
    assert not problems, "\n".join(problems)


def test_no_pointer_names_a_readme_section():
    """The README is the front page; long material and the sections code points to live in docs/."""
    old = re.compile(r"README, \"")
    hits = [f"{f.relative_to(ROOT)}:{n}" for f in pointer_files()
            for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1) if old.search(line)]
    assert not hits, hits


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    problems = []
    for target in README_LINK.findall(text):
        path, _, anchor = target.partition("#")
        if path.startswith("docs/") and path.endswith(".md"):
            why = broken(path[len("docs/"):], anchor or None)
        else:
            why = None if (ROOT / path).exists() else f"no file {path}"
        if why:
            problems.append(f"{target}: {why}")
    assert not problems, problems


def test_each_readme_results_block_is_its_results_page_s():
    """The README's generated blocks: each names the page it came from, which exists, and
    every figure in the block is on that page (written by the same bench run)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- results:(\w+) -->\n(.*?)<!-- /results:\1 -->", text, re.S)
    assert {name for name, _ in blocks} >= {"first_run", "seeds"}
    for name, block in blocks:
        page = DOCS / "results" / f"{name}.md"
        if f"docs/results/{name}.md" not in block:
            assert "not" in block and f"bench/{name}.py" in block, f"block {name} neither links its page nor says how to make it"
            continue
        assert page.is_file(), f"block {name} links docs/results/{name}.md, which does not exist"
        page_text = page.read_text()
        for figure in re.findall(r"\d+(?:\.\d+)?", re.sub(r"\]\([^)]*\)", "]", block)):
            assert figure in page_text, f"README block {name}: {figure} is not on docs/results/{name}.md"
