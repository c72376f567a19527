"""Spot check of DVC stages: re-run the first images / steps of a stage with the current code and
compare them with the committed output.

The project's rule: ``dvc commit`` a stage only where you showed its output unchanged. When a
stage's code dependencies change (or new deps are declared), DVC sees the stage as changed,
but re-running it fully is out of reach on this CPU (hours: 24 trainings, 95 evaluations). So:

1. spot check the stage: ``python -m groupsc.spotcheck evaluate_sparse_gray@sc-BSD68-25``;
2. only if its verdict is ``same``: ``dvc commit evaluate_sparse_gray@sc-BSD68-25``.

A ``DIFFERENT`` stage is re-run (``dvc repro STAGE``) or its difference explained; never
committed as is.

    python -m groupsc.spotcheck evaluate@bm3d_bsd68_25 train@sc_gray_25
    python -m groupsc.spotcheck --all-evaluations --images 1 --out /tmp/spot.csv
    python -m groupsc.spotcheck --all-trainings --steps 2

Stages are the DVC addresses ``<group>@<entry>``: evaluation groups ``evaluate``,
``evaluate_trained``, ``evaluate_comparison`` (entries of params ``evaluations``,
``evaluations_trained``, ``evaluations_comparison``), the matrix groups ``evaluate_<grid>``
(``<method>-<dataset>-<level>`` of params ``grids.<grid>``) and training groups ``train``,
``finetune``, ``train_comparison``, ``finetune_comparison`` (runs of params ``train.runs``,
``train.finetunes``, ``train.comparison``, ``train.comparison_finetunes``; see
:data:`groupsc.fit.RUN_STAGES`).

- Evaluation: the first ``--images`` images (default 1) are evaluated in-process as the stage
  does (``eval.seed``, ``eval.threads`` torch threads) and PSNR, SSIM and (JPEG) PSNR-B are
  compared image by image with ``results/per_image/<key>.csv``.
- Training: the first ``--steps`` steps (default 2) are trained into a temporary folder (the
  run's own thread count), starting from the initial weights the committed ``model.pt``
  records (its ``init``), and the ``loss`` column is compared with the first rows of
  ``checkpoints/<run>/log.csv``. Starting there checks the training code (batches,
  degradation, model, loss, update) apart from the initialization, which is not always
  reproducible: the dictionary learned by scikit-learn for ``train@sc_gray_25`` moved the
  first loss by 1.5e-4 relative here, and the comparison models trained from scratch drew
  their initial weights unseeded before :func:`groupsc.fit.fit` seeded them.

Tolerances (:data:`TOLERANCES`): the committed CSVs hold rounded values (per-image metrics with
6 decimals, the loss with 6 significant digits: rounding errors up to 5e-7 and 5e-6 relative),
and the floating-point sums of a network's forward / backward pass (BLAS kernels, their order
under another thread count or library build) may move a restored pixel by one 8-bit level or a
loss by about 1e-6 relative (a DnCNN-S Set12 image re-runs 3e-6 dB and 3e-6 SSIM away from
its committed row). PSNR / PSNR-B |d| <= 1e-4 dB and SSIM |d| <= 1e-5 are far above both and
100 times below the printed precision of the tables (0.01 dB, 4 decimals of SSIM); a loss
within 1e-4 relative means the same batch, model and update. A change of data, noise draw,
weights or arithmetic moves them by orders of magnitude more.

Each stage prints one line (stage, kind, items compared, max |d| per quantity, verdict, seconds)
as it finishes, and a row is appended to ``--out`` (default ``results/spotcheck.csv``) with the
UTC time, ``git rev-parse HEAD`` and whether the working tree was dirty (``git status
--porcelain`` non-empty, the ``--out`` file itself aside). Exit code: 0 if every stage is
``same``, 1 if any is ``DIFFERENT`` (or failed: verdict ``ERROR``, message on stderr), 2 on
usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from groupsc.fit import RUN_STAGES, all_runs, load_params
from groupsc.paths import repo_root
from groupsc.runtime import set_threads

# dvc.yaml stage group -> params.yaml section of its foreach entries
EVAL_GROUPS = {
    "evaluate": "evaluations",
    "evaluate_trained": "evaluations_trained",
    "evaluate_comparison": "evaluations_comparison",
}
TRAIN_GROUPS = {stage: section for section, stage in RUN_STAGES.items()}
# max |new - committed| that still counts as the same (loss: relative); module docstring
TOLERANCES = {"psnr": 1e-4, "ssim": 1e-5, "psnrb": 1e-4, "loss": 1e-4}
EVAL_QUANTITIES = ("psnr", "ssim", "psnrb")
DELTA_COLUMNS = ["max_abs_d_psnr", "max_abs_d_ssim", "max_abs_d_psnrb", "max_rel_d_loss"]
COLUMNS = [
    "time_utc",
    "commit",
    "dirty",
    "stage",
    "kind",
    "items",
    "start",
    *DELTA_COLUMNS,
    "verdict",
    "seconds",
]


class UsageError(ValueError):
    """A stage name that is not a stage of dvc.yaml, or bad options (exit code 2)."""


@dataclass(frozen=True)
class Stage:
    """One DVC stage: ``address`` as DVC names it, ``key`` the foreach key, ``entry`` its params."""

    address: str
    kind: str  # "evaluation" or "training"
    key: str
    entry: dict


def naming_hint() -> str:
    """One line saying how stages are named."""
    return (
        "stages are named <group>@<entry> as in dvc.yaml: "
        + ", ".join(f"{g}@<params {s}>" for g, s in EVAL_GROUPS.items())
        + ", evaluate_<grid>@<method>-<dataset>-<level> (params grids), "
        + ", ".join(f"{g}@<params train.{s}>" for g, s in TRAIN_GROUPS.items())
        + " (e.g. evaluate@bm3d_bsd68_25, train@sc_gray_25); or --all-evaluations / --all-trainings"
    )


def grid_stages(params: dict) -> dict[str, Stage]:
    """The stages of the matrix groups ``evaluate_<grid>``: one per method x dataset x level of
    params ``grids.<grid>``, addressed as DVC names matrix entries."""
    out = {}
    for grid, axes in (params.get("grids") or {}).items():
        for method, dataset, level in itertools.product(
            axes["method"], axes["dataset"], axes["level"]
        ):
            key = f"{method}-{dataset}-{level}"
            entry = {"method": method, "task": axes["task"], "dataset": dataset, "level": level}
            address = f"evaluate_{grid}@{key}"
            out[address] = Stage(address, "evaluation", key, entry)
    return out


def all_stages(params: dict) -> dict[str, Stage]:
    """Every evaluation and training stage of the pipeline, by DVC address."""
    out = grid_stages(params)
    for group, section in EVAL_GROUPS.items():
        for key, entry in (params.get(section) or {}).items():
            out[f"{group}@{key}"] = Stage(f"{group}@{key}", "evaluation", key, entry)
    runs = all_runs(params)
    for group, section in TRAIN_GROUPS.items():
        for key in params["train"].get(section) or {}:
            out[f"{group}@{key}"] = Stage(f"{group}@{key}", "training", key, runs[key])
    return out


def resolve(
    names: list[str], params: dict, all_evaluations: bool = False, all_trainings: bool = False
) -> list[Stage]:
    """The stages named (and those of the ``--all-*`` flags), in order, each once."""
    known = all_stages(params)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown stage {unknown[0]!r}; {naming_hint()}")
    chosen = [known[n] for n in names]
    chosen += [s for s in known.values() if all_evaluations and s.kind == "evaluation"]
    chosen += [s for s in known.values() if all_trainings and s.kind == "training"]
    if not chosen:
        raise UsageError(f"no stage given; {naming_hint()}")
    return list({s.address: s for s in chosen}.values())


def committed_path(stage: Stage) -> Path:
    """The committed output a stage's spot check compares with."""
    if stage.kind == "evaluation":
        from groupsc.evaluate import eval_key

        e = stage.entry
        stem = eval_key(e["method"], e["task"], e["dataset"], e["level"])
        return repo_root() / "results" / "per_image" / f"{stem}.csv"
    return repo_root() / "checkpoints" / stage.key / "log.csv"


def read_table(path: str | Path) -> pd.DataFrame:
    """A per-image CSV or a training log (image names kept as strings: Set12's ``01``)."""
    return pd.read_csv(path, dtype={"name": str})


@contextlib.contextmanager
def _quiet_threads_kept() -> Iterator[None]:
    """Re-runs print to stderr (the table stays on stdout) and leave torch's threads as found."""
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        set_threads(threads)


def rerun_evaluation(stage: Stage, params: dict, images: int) -> pd.DataFrame:
    """The first ``images`` rows of the stage's per-image table, computed now."""
    from groupsc.evaluate import evaluate

    e = stage.entry
    with _quiet_threads_kept():
        set_threads(params["eval"]["threads"])  # as the stage's --threads
        table, _ = evaluate(
            e["method"],
            e["task"],
            e["dataset"],
            e["level"],
            seed=params["eval"]["seed"],
            limit=images,
            out_dir=None,
            progress=False,
        )
    return table


def rerun_training(stage: Stage, steps: int) -> tuple[pd.DataFrame, str]:
    """The log of the run's first ``steps`` steps, trained now in a temporary folder, and where
    they started: the initial weights the committed ``model.pt`` records (``init``), so that the
    check covers the training steps whatever the initialization drew then, or, for a model
    that records none, the run's own initialization."""
    from groupsc.checkpoint import load_checkpoint
    from groupsc.fit import fit

    path = repo_root() / "checkpoints" / stage.key / "model.pt"
    start = load_checkpoint(path, "restore it with `git checkout`").get("init") or None
    origin = "committed init weights" if start else "fresh initialization"
    with tempfile.TemporaryDirectory(prefix="spotcheck-") as tmp, _quiet_threads_kept():
        fit(stage.key, max_steps=steps, out_root=tmp, progress=False, start=start)
        return read_table(Path(tmp) / stage.key / "log.csv"), origin


def _abs_diff(new: pd.Series, old: pd.Series) -> float:
    """max |new - old|; NaN on both sides agrees, NaN on one side is an infinite difference."""
    a, b = new.to_numpy(float), old.to_numpy(float)
    d = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
    return float(np.nan_to_num(d, nan=math.inf).max(initial=0.0))


def compare_evaluation(new: pd.DataFrame, old: pd.DataFrame) -> dict[str, float]:
    """max |d| of psnr, ssim, psnrb over the images of ``new`` against the same rows of ``old``."""
    old = old.head(len(new)).reset_index(drop=True)
    new = new.reset_index(drop=True)
    if list(new["name"]) != list(old["name"]):  # other images (or fewer committed rows)
        return {q: math.inf for q in EVAL_QUANTITIES}
    return {q: _abs_diff(new[q], old[q]) for q in EVAL_QUANTITIES}


def compare_training(new: pd.DataFrame, old: pd.DataFrame) -> dict[str, float]:
    """max relative |d| of the loss over the steps of ``new`` against the same steps of ``old``."""
    old = old.head(len(new)).reset_index(drop=True)
    new = new.reset_index(drop=True)
    if list(new["step"]) != list(old["step"]):
        return {"loss": math.inf}
    scale = old["loss"].abs().where(old["loss"] != 0, 1.0)
    return {"loss": _abs_diff(new["loss"] / scale, old["loss"] / scale)}


def verdict(deltas: dict[str, float], items: int) -> str:
    """``same`` when something was compared and every max |d| is within :data:`TOLERANCES`."""
    ok = items > 0 and all(d <= TOLERANCES[q] for q, d in deltas.items())
    return "same" if ok else "DIFFERENT"


def spot_check(
    stage: Stage,
    params: dict,
    images: int = 1,
    steps: int = 2,
    committed: str | Path | None = None,
) -> dict:
    """Re-run the first part of ``stage`` and compare it with ``committed`` (default: the file
    the stage wrote, :func:`committed_path`). Returns the row of the report (without git state).
    """
    t0 = time.perf_counter()
    old = read_table(committed or committed_path(stage))
    if stage.kind == "evaluation":
        new = rerun_evaluation(stage, params, images)
        deltas = compare_evaluation(new, old)
    else:  # no more steps than the committed run made
        new, start = rerun_training(stage, min(steps, len(old))) if len(old) else (old, "")
        deltas = compare_training(new, old)
    row = {"stage": stage.address, "kind": stage.kind, "items": len(new)}
    row["start"] = start if stage.kind == "training" else ""
    row.update({_column(q): d for q, d in deltas.items()})
    row["verdict"] = verdict(deltas, len(new))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _column(quantity: str) -> str:
    return f"max_rel_d_{quantity}" if quantity == "loss" else f"max_abs_d_{quantity}"


def git_state(exclude: Path | None = None) -> tuple[str, bool]:
    """(``git rev-parse HEAD``, working tree dirty), the file ``exclude`` aside."""
    root = repo_root()

    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else ""

    spec = []
    if exclude is not None and exclude.resolve().is_relative_to(root):
        spec = ["--", ".", f":(exclude){exclude.resolve().relative_to(root)}"]
    return git("rev-parse", "HEAD") or "unknown", bool(git("status", "--porcelain", *spec))


def format_line(row: dict) -> str:
    """One line of the printed table."""
    deltas = (
        "  ".join(f"{c.split('_d_')[1]} {row[c]:.1e}" for c in DELTA_COLUMNS if c in row) or "-"
    )
    return (
        f"{row['stage']:<44} {row['kind']:<10} {row['items']:>5}  {deltas:<42} "
        f"{row['verdict']:<9} {row['seconds']:>8.1f}"
    )


def header() -> str:
    return (
        f"{'stage':<44} {'kind':<10} {'items':>5}  {'max |d| (loss: relative)':<42} "
        f"{'verdict':<9} {'seconds':>8}"
    )


def append_row(row: dict, out: Path) -> None:
    """Append one row to the CSV ``out`` (header written when the file is new)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    row = {k: f"{v:.3g}" if k in DELTA_COLUMNS else v for k, v in row.items()}
    frame = pd.DataFrame([row], columns=COLUMNS)
    frame.to_csv(out, mode="a", header=not out.exists(), index=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m groupsc.spotcheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("stages", nargs="*", metavar="STAGE", help="e.g. evaluate@bm3d_bsd68_25")
    p.add_argument("--all-evaluations", action="store_true", help="every evaluation stage")
    p.add_argument("--all-trainings", action="store_true", help="every training stage")
    p.add_argument("--images", type=int, default=1, help="images per evaluation (default 1)")
    p.add_argument("--steps", type=int, default=2, help="steps per training (default 2)")
    p.add_argument("--out", default=None, help="CSV to append to (default results/spotcheck.csv)")
    return p


def _run_one(stage: Stage, params: dict, args: argparse.Namespace) -> dict:
    """The report row of one stage; a failure is verdict ERROR with its message on stderr."""
    t0 = time.perf_counter()
    try:
        return spot_check(stage, params, args.images, args.steps)
    except Exception as err:  # noqa: BLE001 - one failing stage must not stop a long run
        print(f"error: {stage.address}: {type(err).__name__}: {err}", file=sys.stderr)
        seconds = round(time.perf_counter() - t0, 1)
        return {
            "stage": stage.address,
            "kind": stage.kind,
            "items": 0,
            "verdict": "ERROR",
            "seconds": seconds,
        }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = load_params()
    try:
        if args.images < 1 or args.steps < 1:
            raise UsageError("--images and --steps must be at least 1")
        stages = resolve(args.stages, params, args.all_evaluations, args.all_trainings)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else repo_root() / "results" / "spotcheck.csv"
    commit, dirty = git_state(exclude=out)
    print(header(), flush=True)
    verdicts = []
    for stage in stages:
        row = _run_one(stage, params, args)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        append_row({"time_utc": stamp, "commit": commit, "dirty": dirty, **row}, out)
        print(format_line(row), flush=True)
        verdicts.append(row["verdict"])
    return 0 if all(v == "same" for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
