"""bench/results.py: a bench's page names the machine (the CPU as lscpu names it),
the date, the commit and the command that reproduces it; the index lists the pages
from their headers; and bench/eval_speed.py, run for real on tiny data, writes its
page where `--results` says and nowhere else."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from pipeline import data  # noqa: E402


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def lscpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), None)


def test_page_header_names_machine_date_commit_and_command(tmp_path):
    argv = ["--data", str(ROOT / "data/prepared/mnist.npz"), "--note", "two words", "--label=it's", "--rounds", "3",
            "--work", str(Path(tempfile.gettempdir()) / "w")]
    body = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    page = results.publish("demo", "A demo | page", body, argv=argv, out=tmp_path)
    assert page == tmp_path / "demo.md"
    head, text = results.header(page), page.read_text()

    model = lscpu_model()
    if model is not None:
        assert results.machine().cpu == model
        assert head["machine"].startswith(f"{model};") and f"- Machine: {model};" in text
    for flag in results.TF_FLAGS:
        assert flag in text  # each is named, present or absent
    if shutil.which("nvidia-smi") is None:
        assert head["machine"].endswith("GPU: none")

    when = datetime.strptime(head["date"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=timezone.utc)
    assert timedelta(0) <= datetime.now(timezone.utc) - when < timedelta(minutes=2)

    commit = head["commit"]
    assert commit.split()[0] == git(ROOT, "rev-parse", "--short", "HEAD")
    assert commit in (commit.split()[0], commit.split()[0] + " + uncommitted changes")
    assert f"- Commit: `{commit}`" in text

    # The command reruns the bench from the repository's root: paths in it relative to it.
    assert shlex.split(head["command"]) == ["python", "bench/demo.py", "--data", "data/prepared/mnist.npz",
                                            "--note", "two words", "--label=it's", "--rounds", "3",
                                            "--work", "<tmp>/w"]  # a folder of this machine's, named
    assert f"- Command: `{head['command']}`" in text
    assert head["title"] == "A demo | page" and text.endswith(body)
    assert str(ROOT) not in text


def test_commit_is_head_and_says_when_tracked_files_changed(tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs/results").mkdir(parents=True)
    (repo / "a.txt").write_text("a")
    (repo / "docs/results/x.md").write_text("x")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    head = git(repo, "rev-parse", "--short", "HEAD")
    assert results.commit(repo) == head
    (repo / "new.txt").write_text("untracked")
    assert results.commit(repo) == head
    (repo / "docs/results/x.md").write_text("a bench ran")
    assert results.commit(repo, leave_out=repo / "docs/results") == head
    assert results.commit(repo) == f"{head} + uncommitted changes"
    (repo / "README.md").write_text("a bench's block")
    git(repo, "add", "README.md")
    git(repo, "commit", "-qm", "readme")
    head = git(repo, "rev-parse", "--short", "HEAD")
    (repo / "README.md").write_text("the block rewritten")
    assert results.commit(repo, leave_out=[repo / "docs/results", repo / "README.md"]) == head
    (repo / "a.txt").write_text("changed")
    assert results.commit(repo, leave_out=repo / "docs/results") == f"{head} + uncommitted changes"
    assert results.commit(repo, leave_out=[repo / "docs/results", repo / "README.md"]) == f"{head} + uncommitted changes"
    assert results.commit(tmp_path / "elsewhere").startswith("unknown")


def test_index_lists_every_page_from_the_headers(tmp_path):
    results.publish("beta", "Beta bench", "b", argv=[], out=tmp_path)
    results.publish("alpha", "Alpha bench", "a", argv=["--x", "1"], out=tmp_path)
    (tmp_path / "notes.md").write_text("# not a bench's page\n")
    index = (tmp_path / "index.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| [")]
    assert [r.split("](")[1].split(")")[0] for r in rows] == ["alpha.md", "beta.md"]
    for name, title in (("alpha", "Alpha bench"), ("beta", "Beta bench")):
        head = results.header(tmp_path / f"{name}.md")
        assert f"| [{title}]({name}.md) | {head['date']} | {head['machine']} |" in rows
    assert results.header(tmp_path / "index.md") == {"title": "Results"}
    (tmp_path / "beta.md").unlink()
    results.write_index(tmp_path)
    assert "beta.md" not in (tmp_path / "index.md").read_text()


def test_results_options():
    import argparse

    ap = argparse.ArgumentParser()
    results.add_arguments(ap)
    assert ap.parse_args([]).results == ROOT / "docs" / "results"
    assert ap.parse_args(["--results", "out/pages"]).results == Path("out/pages")
    assert ap.parse_args(["--results", "none"]).results is None
    assert ap.parse_args(["--no-results"]).results is None


def test_printed_lines_become_markdown():
    lines = ["header line", "  indented: 1.0", "", "| a |", "|---|", "| 1 |", "after the table"]
    assert results.markdown(lines) == ("```text\nheader line\n  indented: 1.0\n```\n\n| a |\n|---|\n| 1 |\n\n"
                                       "```text\nafter the table\n```\n")
    assert results.portable(f"{ROOT}/serving/service.py:12") == "./serving/service.py:12"


@pytest.mark.slow
def test_eval_speed_writes_its_page_where_results_says(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (260, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 260)
    data.save_npz(data.Mnist(images[:200], labels[:200], images[200:], labels[200:]), tmp_path / "tiny.npz")
    repo_page = ROOT / "docs/results/eval_speed.md"
    before = repo_page.read_bytes() if repo_page.exists() else None
    args = ["--data", str(tmp_path / "tiny.npz"), "--queries", "12", "--rounds", "2", "--baseline-queries", "3",
            "--results", str(tmp_path / "pages")]
    proc = subprocess.run([sys.executable, "bench/eval_speed.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "identical to cdist on its queries: True" in proc.stdout  # still printed

    page = tmp_path / "pages/eval_speed.md"
    head, text = results.header(page), page.read_text()
    assert shlex.split(head["command"]) == ["python", "bench/eval_speed.py", *map(results.portable, args)]
    assert "nearest-train L1: 12 queries x 200 training images x 784 pixels, 2 rounds" in text
    assert "identical to cdist on its queries: True" in text and "```text" in text
    assert "[" + head["title"] + "](eval_speed.md)" in (tmp_path / "pages/index.md").read_text()
    assert (repo_page.read_bytes() if repo_page.exists() else None) == before
