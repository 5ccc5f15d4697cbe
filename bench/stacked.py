"""Stacked MNIST's results table (docs/stacked.md): the papers' DCGAN, PacDCGAN2
and PacDCGAN4 and PacDCGAN2's variants (two G updates a step, with virtual codes
too; the weight average), and stacked_best (the channels drawn and judged apart)
over several training seeds, each row made from the MLflow result runs, beside the
rows VEEGAN and PacGAN published.

    python bench/stacked.py                                     # the seven recipes, seeds 0 1 2
    python bench/stacked.py --set train.steps=1000 --work /tmp/stacked
    python bench/stacked.py --table-only --work /tmp/stacked    # the table from the runs there
    python bench/stacked.py --table-only --tracking-uri http://tracking:5000
    python bench/stacked.py --floor-only                        # the real-data floor alone

Runs the pipeline's own stages as subprocesses (as bench/seeds.py does): prepare
and judge once (or `--data`/`--judge` to reuse them), then per recipe and seed
`train` and `evaluate` with `--run-file`, so that each (recipe, seed) is one
FINISHED result run in MLflow (default store: `<work>/mlflow.db`). A pair whose
result run already finished in the work folder is not run again, so a stopped
bench picks up where it was. The table then reads every FINISHED result run of
the store with `prepare.dataset = stacked`, one row per setting (every param but
the seed): named by method (arch, loss, pack, G updates), then by whatever else
sets it apart from the other rows (the weight average, R1, virtual labels, a
precision), with its budget (steps, batch, samples); modes of 1,000 and
KL(generated || uniform) as mean ± std over the seeds, and the wall time of each run from its MLflow record
(start to last logged training step; that to the run's end: evaluate). The
table and the runs' lines go to docs/results/stacked.md too (`--results DIR`,
`--no-results`).

Its first row is the floor no generator can beat: uniform stacked *real* held-out
images, `evaluate.num_samples` of them, drawn as a generator's samples are (fresh
triples of held-out digits, one draw per seed) and scored by the same evaluation
against the same held-out set. Its modes and KL are KL's sampling noise plus the
judge's misreads. `--floor-only` makes that row alone (prepare and judge, no training).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
from collections import Counter
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from bench.seeds import cpu_model, shared_stages, train_and_evaluate  # noqa: E402
from ops.recipe import overrides as recipe_overrides  # noqa: E402
from pipeline import archs, atomic, params  # noqa: E402

RECIPES = ("dcgan_paper_stacked", "dcgan_paper_pac2", "dcgan_paper_pac2_g2", "dcgan_paper_pac4",
           "dcgan_paper_pac2_ema", "dcgan_paper_pac2_g2_virtual", "stacked_best")
# As VEEGAN (Srivastava et al. 2017, table 2) and PacGAN (Lin et al. 2018, table 3)
# report them: their DCGAN-style architecture, their MNIST classifier, full training.
PAPERS = (
    ("DCGAN", 99, 3.40, "VEEGAN, PacGAN"),
    ("ALI", 16, 5.40, "VEEGAN"),
    ("Unrolled GAN", 48.7, 4.32, "VEEGAN"),
    ("VEEGAN", 150, 2.95, "VEEGAN"),
    ("PacDCGAN2", 1000, 0.06, "PacGAN"),
)
ARCH_NAMES = {"dcgan_paper": "DCGAN", "mlp": "MLP GAN"}
# The floor's draws: streams of their own, apart from the training (prepare.stacked_seed)
# and held-out (prepare.stacked_seed + 1) sets', so each is a new draw of real images.
FLOOR_STREAM = 1_000_000


def method(params: dict) -> str:
    """A run's method as the papers name it: DCGAN, PacDCGAN2, or arch and loss spelled out;
    with G's updates a step where more than one."""
    name = ARCH_NAMES.get(params.get("train.arch"), params.get("train.arch", "?"))
    loss = params.get("train.loss", "bce")
    if loss != "bce":
        name += f" ({loss})"
    pack, g_steps = int(params.get("train.pack", 1)), int(params.get("train.g_steps", 1))
    name = f"Pac{name}{pack}" if pack > 1 else name
    d_arch = params.get("train.d_arch", params.get("train.arch"))
    name += f" with {ARCH_NAMES.get(d_arch, d_arch)}'s D" if d_arch != params.get("train.arch") else ""
    return name + (f", {g_steps} G updates a step" if g_steps > 1 else "")


SEED = "train.seed"  # what a row spans
# What a row's name (method) and budget column already say.
NAMED = ("train.arch", "train.d_arch", "train.loss", "train.pack", "train.g_steps", "train.steps",
         "train.batch_size", "prepare.stacked_train", "evaluate.num_samples",
         "train.jit_compile")  # how the step compiles, not what it computes


def setting(params: dict) -> tuple:
    """A run's row: every param but the seed, so runs that differ in anything else (the
    weight average, R1, virtual labels, precision, a learning rate) never share a row."""
    return tuple(sorted((k, str(v)) for k, v in params.items() if k != SEED))


def distinguishing(settings: list[tuple]) -> list[str]:
    """The params, beyond those the name and budget say, whose value differs between rows."""
    keys = sorted({k for s in settings for k, _ in s} - set(NAMED))
    return [k for k in keys if len({dict(s).get(k) for s in settings}) > 1]


def uses(params: dict, key: str) -> bool:
    """Whether a run's networks read `key`: an arch section's keys (`train.<arch>.*`) only
    runs of that arch, as G's or D's, read."""
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "train" and parts[1] in archs.NAMES:
        return parts[1] in (params.get("train.arch"), params.get("train.d_arch"))
    return True


def usual(settings: list[tuple], keys: list[str]) -> dict[str, str | None]:
    """Each key's most common value over the rows that use it (None: the param is absent,
    as in runs made before it existed); the first row's value wins a tie."""
    rows = [dict(s) for s in settings]
    return {k: Counter(r.get(k) for r in rows if uses(r, k)).most_common(1)[0][0] for k in keys}


def label(params: dict, shown: list[str], usual_values: dict[str, str | None] | None = None) -> str:
    """The method's name, then the settings that set its row apart from the others':
    those of `shown` that its networks use, less any at its usual value (`usual`) when given."""
    extra = ", ".join(f"{k} {params.get(k, '–')}" for k in shown
                      if uses(params, k) and (usual_values is None or params.get(k) != usual_values[k]))
    return f"{method(params)}; {extra}" if extra else method(params)


def budget(params: dict) -> tuple[int, int, int, int]:
    """(steps, batch, training images, samples scored)."""
    return (int(params["train.steps"]), int(params["train.batch_size"]), int(params["prepare.stacked_train"]),
            int(params["evaluate.num_samples"]))


def timings(run: dict) -> tuple[float | None, float | None]:
    """Seconds of training (run start to the last logged training step) and of the rest
    (evaluate), from the run's MLflow record; None where the record lacks them."""
    from pipeline import tracking

    trained = tracking.last_logged_time(run["run_id"], "d_loss")
    if trained is None or not run.get("start_time") or not run.get("end_time"):
        return None, None
    return (trained - run["start_time"]) / 1000, (run["end_time"] - trained) / 1000


def mean_std(xs: list[float], digits: int) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def floor(digits, pp, ep, judge, seeds: list[int]) -> list[dict]:
    """Per seed, the evaluation's metrics for `evaluate.num_samples` (ep) uniform stacked
    real held-out images in place of a generator's samples, with the seed and its
    seconds. `digits`: the prepared digits (data.Mnist); pp: prepare params, stacked."""
    from pipeline import data as data_mod, evaluate

    if pp.dataset != "stacked":
        raise SystemExit(f"the floor is Stacked MNIST's; prepare.dataset is {pp.dataset}")
    held_out = data_mod.training_set(digits, pp)
    real, labels = evaluate.real_subset(held_out.x_test, ep.num_samples, ep.seed, held_out.y_test)
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        drawn, _ = data_mod.stack(digits.x_test, digits.y_test, ep.num_samples, FLOOR_STREAM + seed)
        m = evaluate.score(drawn, real, labels, held_out.x_train, judge, ep).metrics
        rows.append({"seed": seed, "samples": ep.num_samples, "seconds": time.perf_counter() - t0,
                     "modes_covered": m["modes_covered"], "class_kl": m["class_kl"]})
    return rows


def floor_key(pp, ep, data: Path, judge: Path) -> str:
    """What the floor's figures depend on: the prepare and evaluate params, the data and the judge."""
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (data, judge)]
    return json.dumps([pp.model_dump(mode="json"), ep.model_dump(mode="json"), digests], sort_keys=True)


def cached_floor(path: Path, key: str, seeds: list[int]) -> list[dict]:
    """The floor's rows for `seeds` scored before in this work folder with the same `key`;
    the floor is the same for every recipe, and each seed costs a full evaluation."""
    if not path.is_file():
        return []
    kept = json.loads(path.read_text())
    return [r for r in kept["rows"] if r["seed"] in seeds] if kept.get("key") == key else []


def floor_row(rows: list[dict]) -> str:
    modes, kls = [r["modes_covered"] for r in rows], [r["class_kl"] for r in rows]
    return (f"| real held-out images (the floor) | this project | {rows[0]['samples']:,} samples, no training "
            f"| {', '.join(str(r['seed']) for r in rows)} | {mean_std(modes, 1)} | {mean_std(kls, 3)} "
            f"| {' / '.join(str(int(m)) for m in modes)} | – | – |")


def defaults(path: Path = ROOT / "params.yaml") -> dict[str, str]:
    """params.yaml's values, flat and as MLflow logs them (strings)."""
    return {k: str(v) for section in params.SECTIONS
            for k, v in params.flat(section, params.load(section, path)).items()}


def completed(run_params: dict, default: dict[str, str]) -> dict:
    """A run's params with those it lacks at their default: a param is added with the
    default that does what runs before it did (train.virtual_groups 1: one code), so a
    run made before it ran as that value does. Not the keys that name a row or its budget,
    which every run logs, some of them resolved from others (train.d_arch from the arch)."""
    return {**{k: v for k, v in default.items()
               if k not in run_params and k not in NAMED and k != SEED and uses(run_params, k)}, **run_params}


def table(runs: list[dict], floor_rows: list[dict] | None = None, default: dict[str, str] | None = None) -> str:
    """The floor, our rows (from the result runs, with params they lack at `default`, by
    default params.yaml's) and the papers' rows, as Markdown."""
    default = defaults() if default is None else default
    runs = [dict(r, params=completed(r["params"], default)) for r in runs]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(setting(r["params"]), []).append(r)
    shown = distinguishing(list(groups))
    common = usual(list(groups), shown)
    named = sorted(((label(rs[0]["params"], shown, common), budget(rs[0]["params"]), rs) for rs in groups.values()),
                   key=lambda row: row[:2])
    lines = ["| method | source | budget | seeds | modes (of 1,000) | KL | modes per seed | train s (median) "
             "| evaluate s (median) |", "|---|---|---|---|---:|---:|---|---:|---:|"]
    if floor_rows:
        lines.append(floor_row(floor_rows))
    for name, (steps, batch, n_train, n_samples), rs in named:
        rs = sorted(rs, key=lambda r: int(r["params"][SEED]))
        modes = [r["metrics"]["modes_covered"] for r in rs]
        kls = [r["metrics"]["class_kl"] for r in rs]
        times = [timings(r) for r in rs]
        train_s, eval_s = ([t[i] for t in times if t[i] is not None] for i in (0, 1))
        medians = [f"{statistics.median(xs):.0f}" if xs else "–" for xs in (train_s, eval_s)]
        lines.append(
            f"| {name} | this project | {steps} steps × {batch} ({steps * batch / n_train:.2g} epochs of "
            f"{n_train:,}); {n_samples:,} samples | {', '.join(r['params'][SEED] for r in rs)} "
            f"| {mean_std(modes, 1)} | {mean_std(kls, 3)} | {' / '.join(str(int(m)) for m in modes)} "
            f"| {' | '.join(medians)} |")
    for name, modes, kl, source in PAPERS:
        lines.append(f"| {name} | {source} | the papers' | – | {modes:g} | {kl:.2f} | – | – | – |")
    return "\n".join(lines) + "\n"


def stacked_runs() -> list[dict]:
    from pipeline import tracking

    return [r for r in tracking.result_runs() if r["params"].get("prepare.dataset") == "stacked"
            and "modes_covered" in r["metrics"]]


def run_all(args, work: Path, env: dict, say: results.Printout) -> list[dict]:
    """The recipes' runs (unless --floor-only) and the floor's rows."""
    from pipeline import tracking

    recipes = [(name, recipe_overrides(ROOT / "recipes" / f"{name}.yaml")) for name in args.recipes]

    def params_with(sets: list[str]) -> str:
        return yaml.safe_dump(params.with_sets(yaml.safe_load(args.params.read_text()), sets), sort_keys=False)

    # Prepare and judge once: the recipes differ in train (and evaluate) only.
    (work / "params.yaml").write_text(params_with(recipes[0][1] + args.set))
    data, judge = args.data or work / "mnist.npz", args.judge or work / "judge.keras"
    shared_stages(work, data, judge, env)
    from pipeline import classifier, data as data_mod

    pp, ep = params.load("prepare", work / "params.yaml"), params.load("evaluate", work / "params.yaml")
    key = floor_key(pp, ep, data, judge)
    floor_rows = cached_floor(work / "floor.json", key, args.seeds)
    missing = sorted(set(args.seeds) - {r["seed"] for r in floor_rows})
    if missing:
        floor_rows = sorted(floor_rows + floor(data_mod.load_prepared(data), pp, ep, classifier.load(judge), missing),
                            key=lambda r: args.seeds.index(r["seed"]))
        atomic.write_json(work / "floor.json", {"key": key, "rows": floor_rows})
    for r in floor_rows:
        kept = "" if r["seed"] in missing else ", scored before, kept"
        say(f"floor seed {r['seed']}: {r['samples']:,} real held-out images, modes {r['modes_covered']}, "
            f"KL {r['class_kl']:.4f} ({r['seconds']:.0f} s{kept})")
    if args.floor_only:
        return floor_rows
    done = {r["run_id"] for r in tracking.result_runs()}
    for name, sets in recipes:
        for seed in args.seeds:
            d = work / f"{name}-seed{seed}"
            d.mkdir(exist_ok=True)
            if (d / "result.json").is_file() and json.loads((d / "result.json").read_text())["run_id"] in done:
                say(f"{name} seed {seed}: done before, kept")
                continue
            (d / "params.yaml").write_text(params_with(sets + args.set + [f"train.seed={seed}"]))
            t, e, m = train_and_evaluate(d, data, judge, env)
            say(f"{name} seed {seed}: train {t:.0f} s, evaluate {e:.0f} s, modes {m['modes_covered']}, "
                f"KL {m['class_kl']:.3f}")
    return floor_rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipes/<name>.yaml, one method each")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="like dvc exp run -S, after the recipe's")
    ap.add_argument("--data", type=Path, help="prepared data to reuse (default: prepare it in the work folder)")
    ap.add_argument("--judge", type=Path, help="a judge to reuse (default: train it in the work folder)")
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--tracking-uri", help="the MLflow store (default: <work>/mlflow.db)")
    ap.add_argument("--table-only", action="store_true", help="print the table from the store's runs; run nothing")
    ap.add_argument("--floor-only", action="store_true", help="prepare, judge and the floor's row; train nothing")
    results.add_arguments(ap)
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="stacked-"))
    work.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{work.resolve() / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # this process scores the floor with TensorFlow too
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_ROOT": str(work.resolve())}
    t0 = time.perf_counter()
    say = results.Printout()
    floor_rows = []
    if not args.table_only:
        floor_rows = run_all(args, work, env, say)
        print(f"\nruns made on {cpu_model()} in {time.perf_counter() - t0:.0f} s; work: {work}")
        say.keep(f"\nruns made in {time.perf_counter() - t0:.0f} s")
    runs = stacked_runs()
    if not runs and not floor_rows:
        raise SystemExit(f"no FINISHED Stacked MNIST result runs in {uri}")
    say(f"\n{len(runs)} result runs with prepare.dataset = stacked in the MLflow store\n")
    say(table(runs, floor_rows))
    if args.results is not None:
        results.publish("stacked", "Stacked MNIST: modes and KL beside the papers'", say.markdown(), argv=argv,
                        out=args.results)


if __name__ == "__main__":
    main()
