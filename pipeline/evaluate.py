"""Stage `evaluate`: score a generator for memorization, mode collapse and quality,
and give a verdict.

    python -m pipeline.evaluate --generator PATH --out DIR

scores any saved Keras generator (n, z_dim) -> (n, 28, 28, c) in [-1, 1], or a
class-conditional one (z (n, z_dim), digit (n,)) -> (n, 28, 28, 1); the other
inputs default as in dvc.yaml (`--params params.yaml --data
data/prepared/mnist.npz --judge models/judge.keras`). Without `--run-file`
nothing goes to MLflow. The pipeline passes the train stage's record
(`--training-run`) and `--run-file`: the result's MLflow run (every stage's
params, the data as its input, the metrics and figures; tracking.result_run
says which run) is written there. Writes `<metrics>` (default
`<out>/metrics.json`) and, under `<out>`, `verdict.json`, `protocol.json`
(what the scores are comparable under), `per_class.json`, `class_hist.csv`
and the PNG figures; for a conditional generator also `per_digit.json`.

Every figure on generated images has the same figure on real held-out test
images beside it; the verdict thresholds are `evaluate.*` in params.yaml.

With `prepare.dataset: stacked` (three digits as one image's channels) the classes
are the 1,000 codes, and `modes_covered` and `class_kl` are VEEGAN's and PacGAN's:
the codes with at least one generated image, and KL(generated || uniform over the
codes); every other metric and rule is the same code on the codes and RGB pixels.

A conditional generator is asked for each digit in turn; the figures above are on
all its images together, and `cond_*` and `*_digit_<d>` ones say whether it drew the
digit asked for, each digit against held-out images of that digit, with rules of
their own (docs/metrics.md#class-conditional-generators).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import operator
from dataclasses import asdict, dataclass, field, replace
from operator import itemgetter
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import atomic, classifier, data, images, metrics, params, tracking
from pipeline.models import digit_input, generate, load_generator, z_dim_of
from pipeline.errors import StageError, run_stage

def latents(n: int, z_dim: int, seed: int) -> np.ndarray:
    """The evaluation's draw of z: n rows from N(0, I)."""
    return np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)


def sample(generator, n: int, seed: int, batch: int = 500) -> np.ndarray:
    """n images from N(0, I) latents as 8-bit pixels (n, 28, 28[, c])."""
    z = latents(n, generator.input_shape[-1], seed)
    out = [images.to_uint8(generator.predict_on_batch(z[i:i + batch])) for i in range(0, n, batch)]
    return np.concatenate(out)


def requested_digits(labels: np.ndarray, n: int) -> np.ndarray:
    """The digit a conditional generator is asked for with each of n samples: the digits
    of the held-out labels (prepare.digits) in turn, so that each gets an equal share (the
    first ones one more where n does not divide) and so does any first part of the draw,
    such as the L1 figures' (evaluate.l1_samples)."""
    present = np.unique(labels)
    return present[np.arange(n) % len(present)]


def sample_digits(generator, digits: np.ndarray, seed: int, batch: int = 500) -> np.ndarray:
    """A conditional generator's images of `digits`, from the same latents as `sample`'s."""
    z = latents(len(digits), z_dim_of(generator), seed)
    return images.to_uint8(generate(generator, z, digits, batch))


def real_indices(total: int, n: int, seed: int) -> np.ndarray:
    """Which held-out images the comparison uses: at most n, drawn without replacement."""
    if total <= n:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


def real_subset(x: np.ndarray, n: int, seed: int, y: np.ndarray | None = None):
    """At most n held-out images (and their labels when given)."""
    keep = real_indices(len(x), n, seed)
    return x[keep] if y is None else (x[keep], y[keep])


def digit_real_indices(labels: np.ndarray, digits: np.ndarray, seed: int) -> np.ndarray:
    """Which held-out images the per-digit figures use: of each digit asked for, as many
    as were asked for (all there are where fewer), drawn without replacement."""
    parts = []
    for d, count in zip(*np.unique(digits, return_counts=True)):
        pool = np.flatnonzero(labels == d)
        parts.append(pool[real_indices(len(pool), count, seed)])
    return np.concatenate(parts)


@dataclass(frozen=True)
class Requested:
    """What a conditional generator was asked for, and the held-out images to judge it by."""
    digits: np.ndarray        # the digit asked for with each generated image
    real: np.ndarray          # held-out images of those digits (digit_real_indices)
    real_labels: np.ndarray


# --- the verdict -------------------------------------------------------------------

Value = Callable[[dict], float]                                # from the metrics
Bound = Callable[[dict, params.EvaluateParams], float]         # from the metrics or the thresholds


@dataclass(frozen=True)
class Rule:
    """One check of the verdict: `verdict` fails when `fails(value(m), bound(m, p))`."""
    verdict: str
    name: str        # the value, as the reason names it
    value: Value
    fails: Callable[[float, float], bool]   # operator.lt (fails below the bound) or operator.gt
    bound_name: str
    bound: Bound
    note: str = ""   # formatted with the thresholds
    conditional: bool = False   # only for a conditional generator (its metrics hold CONDITIONAL)


def threshold(key: str) -> Bound:
    """An `evaluate.*` threshold of params.yaml."""
    return lambda m, p: getattr(p, key)


def check(verdict: str, key: str, fails, param: str, note: str = "", conditional: bool = False) -> Rule:
    """The common rule: a metric against a threshold of the same-named bound."""
    return Rule(verdict, key, itemgetter(key), fails, param, threshold(param), note, conditional)


def excess(a: str, b: str) -> Value:
    return lambda m: m[a] - m[b]


SYMBOL = {operator.lt: "<", operator.gt: ">"}
CONDITIONAL = "cond_accuracy"   # the metric only a conditional generator's scores hold
# The verdict's rules, in the order their reasons are listed.
RULES = (
    Rule("mode_collapse", "modes_covered", itemgetter("modes_covered"), operator.lt, "modes_expected",
         lambda m, p: m["modes_expected"], "a class needs >= {mode_min_share} of its real share"),
    check("mode_collapse", "class_kl", operator.gt, "kl_max"),
    check("mode_collapse", "diversity_ratio", operator.lt, "diversity_min"),
    check("mode_collapse", "class_diversity_min", operator.lt, "diversity_min", "one class's images look alike"),
    check("mode_collapse", "digit_diversity_min", operator.lt, "cond_diversity_min",
          "one requested digit's images look alike", conditional=True),
    Rule("mode_collapse", "duplicate_rate_gen-duplicate_rate_real", excess("duplicate_rate_gen", "duplicate_rate_real"),
         operator.gt, "duplicate_excess_max", threshold("duplicate_excess_max"),
         "pairs of generated images within L1 {near_l1}, above the real rate"),
    check("memorization", "copying_z", operator.lt, "copying_z_min",
          "generated images sit closer to the training set than held-out images do"),
    Rule("memorization", "copy_rate_gen-copy_rate_real", excess("copy_rate_gen", "copy_rate_real"), operator.gt,
         "copy_excess_max", threshold("copy_excess_max"),
         "images within L1 {copy_l1} of a training image, above the real rate"),
    check("quality", "classifier_score_ratio", operator.lt, "classifier_score_ratio_min",
          "classifier score of generated over real images"),
    check("quality", "fcd", operator.gt, "fcd_max"),
    check("quality", "precision", operator.lt, "precision_min"),
    check("quality", "recall", operator.lt, "recall_min"),
    check("quality", "cond_accuracy_ratio", operator.lt, "cond_accuracy_ratio_min",
          "share of images read as the digit asked for, over the judge's accuracy on real ones", conditional=True),
    check("quality", "digit_accuracy_ratio_min", operator.lt, "cond_accuracy_ratio_min",
          "one digit is not drawn when asked for", conditional=True),
)
VERDICTS = ("mode_collapse", "memorization", "quality")


@dataclass(frozen=True)
class Verdict:
    mode_collapse: bool
    memorization: bool
    quality_gate_passed: bool
    reasons: list[str]   # "<verdict>: <value>=<x> <op> <bound>=<y> (<note>)" per failed rule

    def as_dict(self) -> dict:
        return asdict(self)


def verdict(m: dict, p: params.EvaluateParams) -> Verdict:
    """The three booleans and the reasons behind each failed check (RULES)."""
    thresholds = p.model_dump()
    failed: dict[str, list[str]] = {kind: [] for kind in VERDICTS}
    conditional = CONDITIONAL in m
    for rule in (r for r in RULES if conditional or not r.conditional):
        value, bound = rule.value(m), rule.bound(m, p)
        if rule.fails(value, bound):
            note = f" ({rule.note.format(**thresholds)})" if rule.note else ""
            failed[rule.verdict].append(f"{rule.name}={value:.3g} {SYMBOL[rule.fails]} {rule.bound_name}={bound}{note}")
    reasons = [f"{kind}: {r}" for kind, found in failed.items() for r in found]
    return Verdict(bool(failed["mode_collapse"]), bool(failed["memorization"]), not reasons, reasons)


def present_classes(labels: np.ndarray, classes: int) -> np.ndarray:
    """Which classes the data holds (prepare.digits): the digits among the labels, or the
    stacked codes all of whose digits are among them."""
    if classes == 10:
        return np.bincount(labels, minlength=10) > 0
    digits = np.unique(data.digits_of(labels))
    return np.isin(data.digits_of(np.arange(classes)), digits).all(axis=1)


def l1_indices(n_gen: int, n_real: int, p: params.EvaluateParams) -> tuple[np.ndarray, np.ndarray]:
    """Which generated and held-out images the L1 figures use: all, or `l1_samples` of each."""
    if not p.l1_samples or p.l1_samples >= max(n_gen, n_real):
        return np.arange(n_gen), np.arange(n_real)
    real = np.sort(np.random.default_rng(p.seed + 1).permutation(n_real)[:p.l1_samples])
    return np.arange(min(n_gen, p.l1_samples)), real


@dataclass(frozen=True)
class Details:
    """What the figures need beside the metrics."""
    gen_l1: np.ndarray      # the generated images the L1 figures used (evaluate.l1_samples)
    gen_nn: np.ndarray      # each one's L1 distance to its nearest training image
    gen_arg: np.ndarray     # and that image's index
    gen_cls: np.ndarray     # the judge's class of every generated image
    gen_hist: np.ndarray    # the judge's class shares, generated and real
    real_hist: np.ndarray
    per_class: dict[int, metrics.ClassDiversity]
    digits: np.ndarray | None = None   # a conditional generator's: the digit asked for with each image
    per_digit: dict[int, metrics.DigitFigures] = field(default_factory=dict)


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]   # metrics.json: every figure, and the verdict as 0/1
    verdict: Verdict
    details: Details
    generated: np.ndarray | None = None   # the 8-bit samples scored (evaluate() keeps them)


def conditional_figures(gen: np.ndarray, f_gen: np.ndarray, p_gen: np.ndarray, req: Requested, judge,
                        k: int) -> tuple[dict[str, float], dict[int, metrics.DigitFigures]]:
    """Whether a conditional generator drew the digits asked for (the judge against the
    requested label, beside the judge on real images against theirs), and each digit's
    images against held-out images of that digit. A digit with fewer than
    metrics.MIN_CLASS_IMAGES images on either side has no figures of its own."""
    f_real, p_real = classifier.embed(judge, req.real)
    m = {
        "cond_accuracy": metrics.label_accuracy(p_gen, req.digits),
        "cond_accuracy_real": metrics.label_accuracy(p_real, req.real_labels),
        "cond_cross_entropy": metrics.cross_entropy(p_gen, req.digits),
        "cond_cross_entropy_real": metrics.cross_entropy(p_real, req.real_labels),
    }
    m["cond_accuracy_ratio"] = m["cond_accuracy"] / max(m["cond_accuracy_real"], 1e-12)
    per_digit = {}
    for d in np.unique(req.digits):
        g, r = req.digits == d, req.real_labels == d
        if min(g.sum(), r.sum()) >= metrics.MIN_CLASS_IMAGES:
            per_digit[int(d)] = metrics.digit_figures(int(d), (gen[g], f_gen[g], p_gen[g]),
                                                      (req.real[r], f_real[r], p_real[r]), k)
    for d, f in per_digit.items():
        m.update({f"cond_accuracy_digit_{d}": f.accuracy_gen, f"fcd_digit_{d}": f.fcd,
                  f"precision_digit_{d}": f.precision, f"recall_digit_{d}": f.recall,
                  f"diversity_ratio_digit_{d}": f.diversity_ratio})
    return m, per_digit


def class_figures(p_gen: np.ndarray, p_real: np.ndarray, real_labels: np.ndarray,
                  p: params.EvaluateParams) -> dict[str, float]:
    """Modes covered (of those expected) and class KL, from the judge's class probabilities
    of generated and held-out images."""
    gen_hist, real_hist = metrics.class_histogram(p_gen), metrics.class_histogram(p_real)
    # The classes that exist come from the labels (prepare.digits).
    present = present_classes(real_labels, p_gen.shape[1])
    if p_gen.shape[1] == 10:
        # Both histograms through the judge, so its mistakes cancel instead of counting as KL.
        reference, min_share = real_hist, p.mode_min_share
    else:
        # The papers' Stacked MNIST protocol: against uniform, a mode is any code drawn once.
        reference, min_share = present / present.sum(), 0.0
    covered, expected = metrics.modes_covered(gen_hist * present, reference * present, min_share)
    return {"modes_covered": covered, "modes_expected": expected, "class_kl": metrics.kl_divergence(gen_hist, reference)}


def score(gen: np.ndarray, real: np.ndarray, real_labels: np.ndarray, train: np.ndarray, judge,
          p: params.EvaluateParams, requested: Requested | None = None) -> Scores:
    """All metrics of 8-bit generated images against real held-out ones, and the verdict;
    with `requested`, a conditional generator's figures and rules too."""
    if len(real) < 2 or len(gen) < 2:
        raise StageError("evaluate: need at least two generated and two held-out test images")
    # The L1 figures' share of the samples (evaluate.l1_samples): generated images are
    # i.i.d., so the first ones; held-out ones drawn at random.
    gi, ri = l1_indices(len(gen), len(real), p)
    gen_l1, real_l1 = gen[gi], real[ri]
    l1 = metrics.l1_details(gen_l1, real_l1, train)
    m = dict(l1.figures)
    m["duplicate_rate_gen"] = float(np.mean(metrics.nearest_other_l1(gen_l1)[0] < p.near_l1))
    m["duplicate_rate_real"] = float(np.mean(metrics.nearest_other_l1(real_l1)[0] < p.near_l1))

    f_gen, p_gen = classifier.embed(judge, gen)
    f_real, p_real = classifier.embed(judge, real)
    # One partition for both sides (the judge's classes), as the copying test's cells require.
    gen_cls, real_cls = p_gen.argmax(1), p_real.argmax(1)
    gen_cls_l1, real_cls_l1 = gen_cls[gi], real_cls[ri]
    m["copying_z"] = metrics.copying_statistic(l1.gen_nn, gen_cls_l1, l1.real_nn, real_cls_l1)
    m["copying_z_global"] = metrics.mann_whitney_z(l1.gen_nn, l1.real_nn)[1]
    m["copy_rate_gen"] = float(np.mean(l1.gen_nn < p.copy_l1))
    m["copy_rate_real"] = metrics.class_matched_rate(l1.real_nn < p.copy_l1, real_cls_l1, gen_cls_l1)
    classes = p_gen.shape[1]
    gen_hist = metrics.class_histogram(p_gen)
    real_hist = metrics.class_histogram(p_real)
    per_class = metrics.per_class_diversity(gen_l1, gen_cls_l1, real_l1, real_cls_l1, classes)
    m.update(class_figures(p_gen, p_real, real_labels, p))
    m.update({
        "class_entropy_gen": metrics.entropy(gen_hist),
        "class_entropy_real": metrics.entropy(real_hist),
        "judge_confidence_gen": float(p_gen.max(1).mean()),
        "judge_confidence_real": float(p_real.max(1).mean()),
        "judge_accuracy_real": float(np.mean(p_real.argmax(1) == real_labels)),
        "classifier_score_gen": metrics.classifier_score(p_gen),
        "classifier_score_real": metrics.classifier_score(p_real),
        "class_diversity_min": min((c.ratio for c in per_class.values()), default=m["diversity_ratio"]),
        "fcd": metrics.frechet_distance(f_gen, f_real),
    })
    m["kid"], m["kid_std"] = metrics.kid_subsets(f_gen, f_real, p.kid_subsets, p.kid_subset_size, p.seed)
    m["classifier_score_ratio"] = m["classifier_score_gen"] / max(m["classifier_score_real"], 1e-12)
    k = min(p.k, len(gen) - 1, len(real) - 1)
    m.update(metrics.prdc(f_real, f_gen, k))
    per_digit = {}
    if requested is not None:
        cond, per_digit = conditional_figures(gen, f_gen, p_gen, requested, judge, p.k)
        m.update(cond)
        # The worst digit; with none large enough to count alone, the figure over all of them.
        m["digit_accuracy_ratio_min"] = min((f.accuracy_gen / max(f.accuracy_real, 1e-12)
                                             for f in per_digit.values()), default=m["cond_accuracy_ratio"])
        m["digit_diversity_min"] = min((f.diversity_ratio for f in per_digit.values()),
                                       default=m["diversity_ratio"])
    v = verdict(m, p)
    m.update({"mode_collapse": int(v.mode_collapse), "memorization": int(v.memorization),
              "quality_gate_passed": int(v.quality_gate_passed)})
    m["num_generated"], m["num_real"], m["num_l1"] = len(gen), len(real), len(gi)
    digits = None if requested is None else requested.digits
    return Scores(m, v, Details(gen_l1, l1.gen_nn, l1.gen_arg, gen_cls, gen_hist, real_hist, per_class,
                                digits, per_digit))


def evaluate(generator, judge, ds: data.Mnist, p: params.EvaluateParams) -> Scores:
    """Sample the generator and score it against `ds` (data.training_set); a conditional
    generator (models.digit_input) is asked for every digit of the data in equal shares."""
    if generator.output_shape[-1] != data.channels_of(ds):
        raise StageError(f"evaluate: the generator draws {generator.output_shape[1:]} images, the data "
                         f"(prepare.dataset) holds {ds.x_train.shape[1:]}")
    real, labels = real_subset(ds.x_test, p.num_samples, p.seed, ds.y_test)
    if digit_input(generator) is None:
        gen = sample(generator, p.num_samples, p.seed)
        return replace(score(gen, real, labels, ds.x_train, judge, p), generated=gen)
    if data.channels_of(ds) != 1:
        raise StageError("evaluate: a conditional generator draws digits; prepare.dataset must be mnist")
    digits = requested_digits(ds.y_test, p.num_samples)
    keep = digit_real_indices(ds.y_test, digits, p.seed)
    req = Requested(digits, ds.x_test[keep], ds.y_test[keep])
    gen = sample_digits(generator, digits, p.seed)
    return replace(score(gen, real, labels, ds.x_train, judge, p, req), generated=gen)


def write_figures(out: Path, gen: np.ndarray, train: np.ndarray, details: Details) -> None:
    """Class histogram (CSV for the DVC bar plot), nearest-training-image pairs and per-class grids."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    # Long format, one bar per (digit, side): DVC's bar templates take one value field.
    w.writerow(["digit", "share"])
    for c in range(len(details.gen_hist)):
        w.writerow([f"{c} generated", f"{details.gen_hist[c]:.4f}"])
        w.writerow([f"{c} real", f"{details.real_hist[c]:.4f}"])
    atomic.write_text(out / "class_hist.csv", buf.getvalue())

    # Top two rows: the 16 most training-like generated images over their nearest training
    # images (where copying would show); bottom two: 16 chosen at random.
    near = details.gen_l1
    n = min(16, len(near))
    closest = np.argsort(details.gen_nn, kind="stable")[:n]
    rand = np.random.default_rng(0).choice(len(near), n, replace=False)
    rows = [near[closest], train[details.gen_arg[closest]], near[rand], train[details.gen_arg[rand]]]
    images.save_png(images.grid(np.concatenate(rows), cols=n), out / "nearest_train.png", scale=2)

    # A grid per digit; of the 1,000 stacked codes, the ten the generator draws most.
    hist = details.gen_hist
    shown = range(10) if len(hist) == 10 else np.argsort(-hist, kind="stable")[:10]
    for c in shown:
        members = gen[details.gen_cls == c][:64]
        pixels = members if len(members) else np.zeros((1, *gen.shape[1:]), np.uint8)
        images.save_png(images.grid(pixels, cols=8), out / "per_class" / f"class_{c}.png", scale=2)
    # A conditional generator's: a grid per digit asked for, whatever the judge reads.
    if details.digits is not None:
        for d in np.unique(details.digits):
            images.save_png(images.grid(gen[details.digits == d][:64], cols=8), out / "per_digit" / f"digit_{d}.png",
                            scale=2)


def protocol(judge, ds: data.Mnist, p: params.EvaluateParams, conditional: bool = False) -> dict:
    """What makes two evaluations' numbers comparable: the same judge weights, the
    same prepared data and the same draw (samples, seed, k; for a conditional
    generator, the digits asked for). Promotion compares a challenger with the
    champion only under the same protocol."""
    h = hashlib.sha256()
    for w in judge.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    out = {"judge_weights_sha256": h.hexdigest(), "data_sha256": data.arrays_sha256(ds),
           "num_samples": p.num_samples, "seed": p.seed, "k": p.k, "kid_subsets": p.kid_subsets,
           "kid_subset_size": p.kid_subset_size}
    if p.l1_samples:  # named only when set, so that earlier protocols keep their ids
        out["l1_samples"] = p.l1_samples
    if conditional:  # the digits asked for are part of the draw; a plain generator's id stays
        out["conditional"] = True
    out["id"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:12]
    return out


def result_params(params_path: str, training: dict) -> dict:
    """Every stage's params for the result's run: train's as the training ran
    them (its record), the others as validated from params.yaml."""
    out = dict(training.get("params", {}))
    for section in ("prepare", "judge", "evaluate"):
        out.update(params.flat(section, params.load(section, params_path)))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--generator", required=True)
    ap.add_argument("--data", default="data/prepared/mnist.npz")
    ap.add_argument("--judge", default="models/judge.keras")
    ap.add_argument("--judge-report", help="the judge stage's report; its test accuracy joins the metrics logged")
    ap.add_argument("--out", required=True, help="folder for the verdict, per-class figures and plots")
    ap.add_argument("--metrics", help="metrics JSON (default: <out>/metrics.json)")
    ap.add_argument("--training-run", help="the train stage's record of the generator's training")
    ap.add_argument("--run-file", help="write the result's MLflow run here (needs --training-run); none: no MLflow")
    args = ap.parse_args(argv)

    p = params.load("evaluate", args.params)
    out = Path(args.out)
    training = None
    if args.run_file:
        if not args.training_run or not Path(args.training_run).is_file():
            raise StageError(f"--training-run {args.training_run}: the train stage's record is needed with --run-file")
        training = json.loads(Path(args.training_run).read_text())
        run_params = result_params(args.params, training)
    generator = load_generator(args.generator)
    judge = classifier.load(args.judge)
    prep = params.load("prepare", args.params)
    ds = data.training_set(data.load_prepared(args.data), prep)

    scores = evaluate(generator, judge, ds, p)
    m, v = scores.metrics, scores.verdict
    write_figures(out, scores.generated, ds.x_train, scores.details)
    atomic.write_json(out / "verdict.json", v.as_dict())
    conditional = scores.details.digits is not None
    proto = protocol(judge, ds, p, conditional)
    atomic.write_json(out / "protocol.json", proto)
    atomic.write_json(out / "per_class.json", {str(c): d._asdict() for c, d in scores.details.per_class.items()})
    if conditional:
        atomic.write_json(out / "per_digit.json", {str(d): f._asdict() for d, f in scores.details.per_digit.items()})
    atomic.write_json(args.metrics or out / "metrics.json", m)
    if training is not None:
        logged = {k: float(x) for k, x in m.items()}
        if args.judge_report:
            judge_report = json.loads(Path(args.judge_report).read_text())
            logged.update({f"judge_{k}": float(x) for k, x in judge_report.items() if isinstance(x, (int, float))})
        used = tracking.Dataset(args.data, prep.dataset, proto["data_sha256"])
        with tracking.result_run(training, run_params, data=used) as run:
            run.log_metrics([(k, x, 0) for k, x in logged.items()])
            run.log_artifacts(out, "eval")
            atomic.write_json(args.run_file, {**run.record(), "training_run_id": training["run_id"]})
        print(f"evaluate: MLflow run {run.name} ({run.run_id})")
    print("evaluate: " + ", ".join(f"{k}={x:.4g}" for k, x in m.items()))
    print(f"evaluate: mode_collapse={v.mode_collapse} memorization={v.memorization} "
          f"quality_gate_passed={v.quality_gate_passed}")
    for r in v.reasons:
        print(f"  {r}")


if __name__ == "__main__":
    run_stage(main)
