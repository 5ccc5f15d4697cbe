"""Results pages: each bench writes what it measured to `docs/results/<name>.md`,
under a header naming the machine, the date, the commit and the exact command,
and `docs/results/index.md` lists every page, rebuilt from the pages' headers.

    python bench/results.py [DIR]      # rebuild DIR/index.md (default: docs/results)

A bench adds `--results DIR` and `--no-results` with `add_arguments`, prints the
lines its page shows through a `Printout`, and ends with
`publish(name, title, printout.markdown(), argv=argv, out=args.results)`.
The header is YAML front matter (MkDocs takes the page title from it; the index
is rebuilt from it) followed by the same facts as a list a reader sees.
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import yaml

from pipeline import atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
# The x86 features TensorFlow's oneDNN kernels choose their code paths by.
# What benches write besides their pages: the pictures and the README's generated blocks.
WRITTEN_BY_BENCHES = (ROOT / "docs" / "img", ROOT / "README.md")
TF_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Machine:
    cpu: str
    flags: tuple[str, ...]  # those of TF_FLAGS the CPU has
    cores: int              # os.cpu_count()
    usable: int             # the cores this process may run on
    memory_gib: float
    gpu: str                # "none" where nvidia-smi is missing or finds none

    def cores_text(self) -> str:
        return f"{self.cores} cores" + (f" ({self.usable} usable)" if self.usable != self.cores else "")

    def one_line(self) -> str:
        return (f"{self.cpu}; {self.cores_text()}; {self.memory_gib:.1f} GiB; "
                f"{' '.join(self.flags) or 'no avx2'}; GPU: {self.gpu}")


def _fields(text: str, sep: str = ":") -> dict[str, str]:
    """`key: value` lines, the first of each key (lscpu, /proc/cpuinfo)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            fields.setdefault(key.strip(), value.strip())
    return fields


def lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    except OSError:
        return {}
    return _fields(out)


def cpu_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and flags: lscpu's, else /proc/cpuinfo's, else what Python knows."""
    info = lscpu()
    if "Model name" in info:
        return info["Model name"], set(info.get("Flags", "").split())
    try:
        info = _fields(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = {}
    return info.get("model name") or platform.processor() or "unknown CPU", set(info.get("flags", "").split())


def gpu() -> str:
    """nvidia-smi's name and memory of each GPU, or "none"."""
    if shutil.which("nvidia-smi") is None:
        return "none"
    proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True)
    found = collections.Counter(line.strip() for line in proc.stdout.splitlines() if line.strip())
    if proc.returncode or not found:
        return "none"
    return "; ".join(f"{n} × {g}" if n > 1 else g for g, n in found.items())


def machine() -> Machine:
    cpu, flags = cpu_and_flags()
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return Machine(cpu, tuple(f for f in TF_FLAGS if f in flags), cores, usable, memory, gpu())


def commit(root: Path = ROOT, leave_out: Path | Sequence[Path] | None = None) -> str:
    """HEAD's short hash, with "+ uncommitted changes" where tracked files differ from it.
    Changes under `leave_out` (the results folder, the pictures, the README's blocks) do
    not count: the benches write them, and they change nothing that is measured."""
    def git(*args: str) -> subprocess.CompletedProcess:
        # No optional locks: another git process may be committing in the same checkout.
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True)

    try:
        head = git("rev-parse", "--short", "HEAD")
    except OSError:
        return "unknown (no git)"
    if head.returncode:
        return "unknown (not a git checkout)"
    top = Path(root).resolve()
    outs = [leave_out] if isinstance(leave_out, (str, Path)) else list(leave_out or ())
    inside = [Path(o).resolve() for o in outs if Path(o).resolve().is_relative_to(top)]
    paths = ["--", ".", *(f":(exclude){o.relative_to(top)}" for o in inside)] if inside else []
    dirty = git("status", "--porcelain", "--untracked-files=no", *paths).stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def _relative(arg: str) -> str:
    """A path inside the repository (alone or as `--opt=PATH`) relative to it."""
    opt, eq, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
    if os.path.isabs(value):
        real = Path(os.path.realpath(value))
        if real.is_relative_to(ROOT):
            value = str(real.relative_to(ROOT))
    return opt + eq + value


def portable(text: str) -> str:
    """`text` with this machine's folders named rather than spelled out: the repository
    (`.`), the virtual environment (`<venv>`), Python's own (`<python>`), the temp folder."""
    folders = {str(ROOT): ".", sys.prefix: "<venv>", sys.base_prefix: "<python>", tempfile.gettempdir(): "<tmp>"}
    for folder in sorted(folders, key=len, reverse=True):  # the innermost first: the venv may be in the repository
        text = text.replace(folder + "/", folders[folder] + "/")
    return text


def command(name: str, argv: list[str]) -> str:
    """The command that ran bench/<name>.py with `argv`, as one would type it at the repository's root."""
    return shlex.join(["python", f"bench/{name}.py", *(portable(_relative(a)) for a in argv)])


def header(page: Path) -> dict:
    """A page's front matter ({} for a page without one)."""
    text = page.read_text()
    if not text.startswith("---\n"):
        return {}
    front, end, _ = text[4:].partition("\n---\n")
    return (yaml.safe_load(front) or {}) if end else {}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def write_index(out: Path = RESULTS) -> Path:
    """`out/index.md`: a row per page (title, date, machine), read from the pages' headers."""
    rows = []
    for page in sorted(Path(out).glob("*.md")):
        h = header(page) if page.name != "index.md" else {}
        if {"title", "date", "machine"} <= h.keys():
            rows.append(f"| [{_cell(h['title'])}]({page.name}) | {_cell(h['date'])} | {_cell(h['machine'])} |")
    text = ("---\ntitle: Results\n---\n\n# Results\n\n"
            "Each page is written by the bench that measured it (`bench/<page>.py`), with the machine, "
            "commit and command in its header. This list is rebuilt from those headers by "
            "`bench/results.py`; edits here are lost.\n\n"
            "| page | date | machine |\n|---|---|---|\n" + "".join(r + "\n" for r in rows))
    index = Path(out) / "index.md"
    atomic.write_text(index, text)
    return index


def publish(name: str, title: str, body: str, *, argv: list[str] | None = None, out: Path | None = None) -> Path:
    """Write `out/<name>.md` (default docs/results) atomically: the header, then `body`
    (Markdown); then rebuild the index. `argv` is the bench's arguments (default sys.argv[1:])."""
    out = Path(out) if out is not None else RESULTS
    m = machine()
    head = {"title": title, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": m.one_line(), "commit": commit(ROOT, leave_out=[out, *WRITTEN_BY_BENCHES]),
            "command": command(name, sys.argv[1:] if argv is None else list(argv))}
    absent = [f for f in TF_FLAGS if f not in m.flags]
    text = ("---\n" + yaml.safe_dump(head, sort_keys=False, allow_unicode=True, width=1 << 16) + "---\n\n"
            f"# {title}\n\n"
            f"- Machine: {m.cpu}; {m.cores_text()}; {m.memory_gib:.1f} GiB of memory; GPU: {m.gpu}\n"
            f"- CPU flags TensorFlow uses: {', '.join(m.flags) or 'none'} present"
            f"{'; ' + ', '.join(absent) + ' absent' if absent else ''}\n"
            f"- Date: {head['date']}\n"
            f"- Commit: `{head['commit']}`\n"
            f"- Command: `{head['command']}`\n\n"
            + portable(body).strip() + "\n")
    page = out / f"{name}.md"
    atomic.write_text(page, text)
    write_index(out)
    return page


README = ROOT / "README.md"


def readme_block(name: str, text: str, readme: Path = README) -> None:
    """Rewrite the README's generated block `<!-- results:<name> -->` with `text`: the
    front page quotes a results page's figures without anyone retyping them."""
    start, end = f"<!-- results:{name} -->\n", f"<!-- /results:{name} -->"
    old = readme.read_text()
    before, found, rest = old.partition(start)
    _, found_end, after = rest.partition(end)
    if not (found and found_end):
        raise SystemExit(f"{readme.name} has no block {start.strip()} ... {end}")
    atomic.write_text(readme, before + start + text.strip() + "\n" + end + after)


def markdown(lines: list[str]) -> str:
    """Printed lines as Markdown: Markdown table rows as they are, every other run of
    lines in a text block (so that columns aligned with spaces stay aligned)."""
    blocks: list[str] = []
    run: list[str] = []

    def is_row(line: str) -> bool:
        return line.lstrip().startswith("|")

    def close() -> None:
        if run:
            blocks.append("\n".join(run) if is_row(run[0]) else "```text\n" + "\n".join(run) + "\n```")
            run.clear()

    for line in lines:
        if not line.strip() or (run and is_row(run[0]) != is_row(line)):
            close()
        if line.strip():
            run.append(line.rstrip())
    close()
    return "\n\n".join(blocks) + "\n"


class Printout:
    """Prints a bench's lines as it goes and keeps them for its page."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.keep(text)

    def keep(self, text: str = "") -> None:
        """For the page only: where stdout's line names this machine's folders."""
        self.lines += text.split("\n")

    def markdown(self) -> str:
        return markdown(self.lines)


def _results_dir(text: str) -> Path | None:
    return None if text.lower() == "none" else Path(text)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """--results DIR (default docs/results; "none": no page) and --no-results."""
    ap.add_argument("--results", type=_results_dir, default=RESULTS, metavar="DIR",
                    help="folder for this bench's results page (default: docs/results; none: no page)")
    ap.add_argument("--no-results", dest="results", action="store_const", const=None,
                    help="write no results page")


if __name__ == "__main__":
    print(write_index(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
