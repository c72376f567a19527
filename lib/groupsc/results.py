"""The tidy results table ``results/summary.csv`` and measured-beside-published comparisons.

Columns: ``method, source, task, dataset, level, metric, value, n_images, params, budget``
with ``source`` in {published, released, trained}, ``metric`` in {psnr, ssim, psnrb,
sec_per_image} and ``n_images`` the number of images a measured figure averages (empty for
published rows). Published rows come from ``references/*.csv`` (the papers' tables); measured
rows from the evaluation records ``results/per_image/*.json`` written by
:func:`groupsc.evaluate.evaluate`. The table is always rebuilt whole, so it is reproducible.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from groupsc.fit import finetuned_runs, load_params
from groupsc.methods import METHODS
from groupsc.methods.trained import trained_run
from groupsc.paths import repo_root, results_dir

COLUMNS = [
    "method",
    "source",
    "task",
    "dataset",
    "level",
    "metric",
    "value",
    "n_images",
    "params",
    "budget",
]
METRICS = ("psnr", "ssim", "psnrb", "sec_per_image")
PUBLISHED_FILES = ("published_results.csv", "published_extra.csv")


def _as_measured(df: pd.DataFrame) -> pd.DataFrame:
    """The papers' demosaicking rows named as the harness names its runs: the task has no
    level (0, as :func:`groupsc.degradations.validate_level` returns) and its images are in
    color, so the tables' ``BSD68`` column is the color set ``CBSD68``."""
    demosaic = df.task == "demosaic"
    df = df.copy()
    df.loc[demosaic & (df.dataset == "BSD68"), "dataset"] = "CBSD68"
    df.loc[demosaic & df.level.isna(), "level"] = 0.0
    return df


def published_rows(folder: str | Path | None = None) -> pd.DataFrame:
    """The papers' figures as summary rows (``budget`` names the paper and table), named as
    the measured ones (:func:`_as_measured`)."""
    folder = Path(folder) if folder else repo_root() / "references"
    frames = []
    for name in PUBLISHED_FILES:
        df = _as_measured(pd.read_csv(folder / name, dtype={"params": str}))
        frames.append(
            pd.DataFrame(
                {
                    "method": df.method,
                    "source": "published",
                    "task": df.task,
                    "dataset": df.dataset,
                    "level": df.level.astype(float),
                    "metric": df.metric,
                    "value": df.value.astype(float),
                    "n_images": pd.NA,
                    "params": df.params.fillna(""),
                    "budget": "paper: " + df.paper + " " + df.table,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def measured_rows(folder: str | Path | None = None) -> pd.DataFrame:
    """Rows from every evaluation record ``*.json`` in ``folder`` (default results/per_image)."""
    folder = Path(folder) if folder else results_dir() / "per_image"
    finetunes = finetuned_runs(load_params())
    rows = []
    for path in sorted(folder.glob("*.json")):
        rec = json.loads(path.read_text())
        if "__first" in rec["key"]:
            raise ValueError(
                f"{path} is a partial evaluation (--limit); it does not belong among the full "
                "ones: delete it"
            )
        budget = rec.get("budget", "") + _lineage(rec, finetunes)  # once per record
        for metric in METRICS:
            value = rec.get(metric)
            if value is None:
                continue
            rows.append(
                {
                    "method": rec["method"],
                    "source": rec["source"],
                    "task": rec["task"],
                    "dataset": rec["dataset"],
                    "level": float(rec["level"]),
                    "metric": metric,
                    "value": float(value),
                    "n_images": int(rec["n_images"]),
                    "params": rec.get("params", ""),
                    "budget": budget,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _lineage(rec: dict, finetunes: dict) -> str:
    """For a model fine-tuned from other runs (``finetunes``: runs with ``init.from_run``), the
    runs it started from and the training minutes of the whole chain; ``""`` for anything else.

    ``rec`` is an evaluation record (its ``key`` starts with the method key).
    """
    if rec.get("source") != "trained":
        return ""
    run = trained_run(rec["key"].split("__")[0], rec["task"], rec["level"])
    if run not in finetunes:
        return ""

    def minutes(name: str) -> float:
        budget = json.loads((repo_root() / "checkpoints" / name / "train.json").read_text())
        return budget["train_minutes"] + budget["init_minutes"]

    chain, total = [], minutes(run)
    while run in finetunes:
        run = finetunes[run]["init"]["from_run"]
        chain.append(f"{run} ({minutes(run):.0f} min)")
        total += minutes(run)
    return f"; started from {' <- '.join(chain)}: {total:.0f} min in all"


CSV_METRICS = {"psnr": "psnr", "ssim": "ssim", "psnrb": "psnrb", "seconds": "sec_per_image"}


DERIVED = "its mean over the images of"  # in the budget of a full record's subset mean


def derived(df: pd.DataFrame) -> pd.Series:
    """Rows that average a full evaluation over a stated subset (:func:`subset_rows`): the
    same measurement again, so never counted twice (CPU costs, budgets)."""
    return df.budget.fillna("").astype(str).str.contains(DERIVED, regex=False)


def subset_label(dataset: str, n: int) -> str:
    """The dataset name of a stated subset: ``CBSD68 (first 10)``."""
    return f"{dataset} (first {n})"


def subsets_of(comp: pd.DataFrame, task: str, datasets: tuple[str, ...]) -> tuple[str, ...]:
    """The stated subsets (``CBSD68 (first 10)``, :func:`subset_label`) of ``datasets``
    measured for ``task`` in ``comp`` (summary or comparison rows), in the order of
    ``datasets``."""
    names = set(comp[comp.task == task].dataset)
    return tuple(
        name for base in datasets for name in sorted(names)
        if name.startswith(f"{base} (first ")
    )  # fmt: skip


def subset_rows(folder: str | Path | None = None, full: str | Path | None = None) -> pd.DataFrame:
    """Rows of the stated-subset evaluations (``results/subset``: the ``evaluate_subset``
    stage, ``--limit N``), for a model too slow for a whole set, under the dataset
    :func:`subset_label`; beside it, every full evaluation of ``full`` (results/per_image)
    with the same task, dataset and level, averaged over the same images (the harness seeds
    each image's observation, so the inputs are the same): the figures it is compared with.
    """
    folder = Path(folder) if folder else results_dir() / "subset"
    full = Path(full) if full else results_dir() / "per_image"
    finetunes = finetuned_runs(load_params())
    rows, done = [], set()

    def add(rec: dict, table: pd.DataFrame, label: str, budget: str) -> None:
        for column, metric in CSV_METRICS.items():
            values = table[column].dropna() if column in table else pd.Series(dtype=float)
            if len(values) == len(table):
                rows.append(
                    {"method": rec["method"], "source": rec["source"], "task": rec["task"],
                     "dataset": label, "level": float(rec["level"]), "metric": metric,
                     "value": float(values.mean()), "n_images": len(table),
                     "params": rec.get("params", ""), "budget": budget}
                )  # fmt: skip

    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = json.loads(path.read_text())
        table = pd.read_csv(path.with_suffix(".csv"))
        names = list(table.name.astype(str))
        label = subset_label(rec["dataset"], len(names))
        add(rec, table, label, rec.get("budget", "") + _lineage(rec, finetunes))
        setting = (rec["task"], rec["dataset"], float(rec["level"]), tuple(names))
        if setting in done:
            continue
        done.add(setting)
        for other in sorted(full.glob("*.json")):
            orec = json.loads(other.read_text())
            if (orec["task"], orec["dataset"], float(orec["level"])) != setting[:3]:
                continue
            otable = pd.read_csv(other.with_suffix(".csv"))
            otable = otable[otable.name.astype(str).isin(names)]
            if len(otable) != len(names):
                raise ValueError(f"{other} lacks images of the subset {path.name}: re-run it")
            budget = orec.get("budget", "") + _lineage(orec, finetunes)
            add(orec, otable, label, f"{budget}; {DERIVED} {path.stem}")
    return pd.DataFrame(rows, columns=COLUMNS)


def build_summary() -> pd.DataFrame:
    """Published + measured rows (the full evaluations and the stated subsets), sorted, with
    the fixed column order."""
    frames = [published_rows(), measured_rows(), subset_rows()]
    df = pd.concat([f for f in frames if not f.empty], ignore_index=True)[COLUMNS]
    df["n_images"] = df.n_images.astype("Int64")
    return df.sort_values(["task", "dataset", "level", "metric", "source", "method"], kind="stable")


def write_summary(path: str | Path | None = None) -> Path:
    """Rebuild ``results/summary.csv``; returns its path."""
    path = Path(path) if path else results_dir() / "summary.csv"
    build_summary().to_csv(path, index=False, float_format="%.4f")
    return path


def _aliases() -> dict[str, tuple[str, ...]]:
    return {info.name: info.published_names or (info.name,) for info, _ in METHODS.values()}


def comparison(
    summary: pd.DataFrame | None = None, metrics=("psnr", "ssim", "psnrb")
) -> pd.DataFrame:
    """Each measured figure beside every published figure for the same method and setting.

    Returns columns ``method, source, task, dataset, level, metric, measured, n_images,
    published, reference, delta`` (``delta = measured - published``; NaN where nothing was
    published).
    Papers that print the same figure share one row, their references joined by ``;``.
    """
    s = summary if summary is not None else build_summary()
    pub = s[s.source == "published"]
    mea = s[(s.source != "published") & s.metric.isin(metrics)]
    aliases = _aliases()
    rows = []
    for r in mea.itertuples():
        names = aliases.get(r.method, (r.method,))
        match = pub[
            pub.method.isin(names)
            & (pub.task == r.task)
            & (pub.dataset == r.dataset)
            & (pub.level == r.level)
            & (pub.metric == r.metric)
        ]
        base = {
            "method": r.method,
            "source": r.source,
            "task": r.task,
            "dataset": r.dataset,
            "level": r.level,
            "metric": r.metric,
            "measured": r.value,
            "n_images": r.n_images,
        }
        if match.empty:
            rows.append({**base, "published": float("nan"), "reference": "", "delta": float("nan")})
        for value, same in match.groupby("value", sort=True):  # one row per distinct figure
            refs = "; ".join(
                f"{m.method}, {m.budget.removeprefix('paper: ')}" for m in same.itertuples()
            )
            rows.append({**base, "published": value, "reference": refs, "delta": r.value - value})
    return pd.DataFrame(rows)


PRIMARY_PAPER = "groupsc"  # where papers disagree on a figure, the GroupSC paper's is shown


def one_published(comp: pd.DataFrame) -> pd.DataFrame:
    """:func:`comparison` with one published figure per measured one: the GroupSC paper's
    where it has one, from its main tables before its appendix."""
    ref = comp.reference.fillna("")
    mains = tuple(f"{m}, {PRIMARY_PAPER} Appendix" for m in comp.method.unique())
    comp = comp.assign(other=~ref.str.contains(PRIMARY_PAPER), appendix=ref.str.startswith(mains))
    comp = comp.sort_values(["other", "appendix", "reference"], kind="stable")
    comp = comp.drop(columns=["other", "appendix"])
    return comp.drop_duplicates(["method", "task", "dataset", "level", "metric"])


def level_label(task: str, level: float) -> str:
    """``q = 10`` (JPEG), ``σ = 25`` (denoising), ``""`` (a mosaic has no level)."""
    if task == "demosaic":
        return ""
    return f"q = {level:g}" if task == "jpeg" else f"σ = {level:g}"


def setting_label(name: str, task: str, level: float) -> str:
    """A dataset or method with its level: ``BSD68 σ = 25``, ``Kodak24`` (demosaicking)."""
    label = level_label(task, level)
    return f"{name} {label}" if label else name


def _cell(measured: float, published: float) -> str:
    if pd.isna(published):
        return f"{measured:.2f}"
    return f"{measured:.2f} ({published:.2f})"


def psnr_table(
    comp: pd.DataFrame, tasks: tuple[str, ...], datasets: tuple[str, ...], metric: str = "psnr"
) -> pd.DataFrame:
    """Methods (and their source) as rows, ``dataset level`` as columns, cells
    ``measured (published)`` as strings (``-``: not measured); ``comp`` from
    :func:`one_published`. Methods measured at the most settings come first; the input
    itself is shown for JPEG only."""
    rows = comp[comp.task.isin(tasks) & comp.dataset.isin(datasets) & (comp.metric == metric)]
    rows = rows if "jpeg" in tasks else rows[rows.method != "Input"]
    if rows.empty:
        return pd.DataFrame()
    keys = sorted(
        {(r.dataset, r.level, r.task) for r in rows.itertuples()},
        key=lambda c: (datasets.index(c[0]), c[1]),
    )
    counts = rows.groupby("method")["level"].count()
    table = pd.DataFrame(
        index=pd.MultiIndex.from_tuples(
            [
                (m, rows[rows.method == m].source.iloc[0])
                for m in counts.sort_values(ascending=False, kind="stable").index
            ],
            names=["method", "source"],
        ),  # fmt: skip
        columns=[setting_label(d, t, lv) for d, lv, t in keys],
        data="-",
    )
    for r in rows.itertuples():
        column = setting_label(r.dataset, r.task, r.level)
        table.loc[(r.method, r.source), column] = _cell(r.measured, r.published)
    return table


def add_seconds(
    table: pd.DataFrame, summary: pd.DataFrame, column: str = "s/image", **where
) -> pd.DataFrame:
    """``table`` with a column of measured seconds per image (the ``sec_per_image`` rows).

    Rows match on ``method`` and on whichever of ``task, dataset, level`` ``table`` has;
    ``where`` first narrows the summary rows (``dataset="BSD68", level=25``).
    """
    sec = summary[summary.metric == "sec_per_image"]
    for key, value in where.items():
        sec = sec[sec[key] == value]
    keys = ["method"] + [k for k in ("task", "dataset", "level") if k in table.columns]
    sec = sec[keys + ["value"]].rename(columns={"value": column})
    return table.merge(sec, on=keys, how="left")


def short_summary(summary: pd.DataFrame) -> str:
    """One line per task and measured model: its PSNR per dataset and level (``make repro``)."""
    mea = summary[(summary.source != "published") & (summary.metric == "psnr")]
    lines = []
    for (task, method), rows in mea.groupby(["task", "method"], sort=True):
        sets = []
        for dataset, r in rows.sort_values("level").groupby("dataset", sort=True):
            levels = "/".join(f"{v:g}" for v in r.level)
            sets.append(f"{dataset} {levels}: " + "/".join(f"{v:.2f}" for v in r.value))
        lines.append(f"{task:20s} {method:22s} {rows.source.iloc[0]:8s} " + "; ".join(sets))
    return "\n".join(
        ["PSNR (dB) per task and model, levels in order (sigma or JPEG quality):", *lines, "",
         "beside the published figures: README.md, docs/results.md, results/comparison.txt"]
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Print measured-beside-published PSNR from ``results/summary.csv`` (``make repro``).

    With ``--write``, first rebuild the summary from the records (the ``summary`` stage).
    """
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--write", action="store_true", help="rebuild results/summary.csv first")
    p.add_argument("--short", action="store_true", help="one line per task and model")
    args = p.parse_args(argv)
    path = write_summary() if args.write else results_dir() / "summary.csv"
    if not path.exists():
        print(f"error: {path} is missing; run `dvc repro` (or `make repro`)", file=sys.stderr)
        return 2
    s = pd.read_csv(path)
    if args.short:
        print(short_summary(s))
        return 0
    comp = comparison(s, metrics=("psnr", "psnrb"))
    speed = s[s.metric == "sec_per_image"].rename(columns={"value": "s/img"})
    comp = comp.merge(
        speed[["method", "task", "dataset", "level", "s/img"]],
        on=["method", "task", "dataset", "level"],
        how="left",
    )
    comp["reference"] = comp.reference.str.slice(0, 60)
    comp["n_images"] = comp.n_images.astype("Int64")
    comp = comp.rename(columns={"n_images": "images"})
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 1000)
    print(f"{path.relative_to(repo_root())}: {len(s)} rows; measured beside published:\n")
    print(comp.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
