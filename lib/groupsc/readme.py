"""The results tables of ``README.md`` and ``docs/results.md``, generated from
``results/summary.csv`` so that no figure is typed by hand.

A generated block sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``; everything
else in the file is prose and is left alone. ``make repro`` rewrites the blocks after ``dvc
repro`` (not the ``summary`` stage itself: the files are prose that people edit, and a stage
output they would make "modified" at every edit); ``python -m groupsc.readme --check`` and
``tests/test_readme.py`` fail when a file and the summary disagree. Cells read ``measured
(published)``: PSNR in dB from the harness beside the papers' figure for the same method,
dataset and level (``-``: not run here).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd

from groupsc.paths import repo_root, results_dir
from groupsc.results import (
    comparison,
    derived,
    one_published,
    psnr_table,
    setting_label,
    subsets_of,
)

FILES = ("README.md", "docs/results.md", "docs/training.md", "docs/costs.md", "docs/harness.md")
BLOCK = re.compile(
    r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S
)


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame of strings as a markdown table (its index as the first columns)."""
    if table.empty:
        return "Nothing measured yet.\n"
    flat = table.reset_index()
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * flat.shape[1]]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in flat.itertuples(index=False)]
    return "\n".join(lines) + "\n"


KODAK24_NOTE = (
    "Kodak24 here is the set of 500 × 500 crops that FFDNet distributes, not the 768 × 512 "
    "frames: its PSNRs are not those of papers that use the full frames.\n"
)


def _grid(comp: pd.DataFrame, tasks: tuple[str, ...], datasets: tuple[str, ...]) -> str:
    """The PSNR grid of ``tasks`` on ``datasets``; a Kodak24 column brings its note."""
    return _noted(markdown(psnr_table(comp, tasks, datasets)))


def _noted(table: str) -> str:
    """``table`` with the Kodak24 note under it when it has a Kodak24 column or row."""
    return table + "\n" + KODAK24_NOTE if "| Kodak24" in table else table


def gray_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    return _grid(comp, ("gray_denoise",), ("BSD68", "Set12"))


ABLATION = re.compile(r"\(.*, .*\)$")  # "GroupSC (k-NN, K=12)": a variant of a model


def gray_brief_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The README's gray grid: :func:`gray_table` without the ablations (the variants
    named ``Model (a, b)``, shown in ``docs/results.md``)."""
    return _grid(comp[~comp.method.str.contains(ABLATION)], ("gray_denoise",), ("BSD68", "Set12"))


def jpeg_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    return _grid(comp, ("jpeg",), ("Classic5", "LIVE1"))


COLOR_SETS = ("CBSD68", "Kodak24", "McMaster")
MOSAIC_SETS = ("Kodak24", "CBSD68", "McMaster")


def color_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Non-blind models, then the blind ones (one model for every sigma): one table each, as
    the same dataset and level head a column in both."""
    known = _grid(comp, ("color_denoise",), COLOR_SETS)
    blind = _grid(comp, ("blind_color_denoise",), COLOR_SETS)
    told = comp[(comp.task == "blind_color_denoise") & (comp.source != "published")]
    note = (
        "; BM3D is CBM3D given the σ estimated from the noisy image"
        if (told.method == "BM3D").any() else ""
    )
    return known + f"\nBlind (one model for every σ{note}):\n\n" + blind


def color_subset_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The color models on their stated subsets (:func:`_subset_grid`)."""
    return _subset_grid(comp, "color_denoise", COLOR_SETS)


def _subset_grid(comp: pd.DataFrame, task: str, datasets: tuple[str, ...]) -> str:
    """The PSNR grid of ``task`` on its stated subsets of ``datasets`` under a line saying
    what they are; ``No stated subset.`` without one."""
    subsets = subsets_of(comp, task, datasets)
    if not subsets:
        return "No stated subset.\n"
    return (
        "On a stated subset (a model too slow for the whole set; every other model "
        "averaged over the same images, the same observations):\n\n"
        + _grid(comp, (task,), subsets)
    )


def demosaic_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    return _grid(comp, ("demosaic",), MOSAIC_SETS)


def demosaic_subset_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The demosaicking models on their stated subsets (:func:`_subset_grid`)."""
    return _subset_grid(comp, "demosaic", MOSAIC_SETS)


GROUPED = ("GroupSC (k-NN)", "GroupSC")


# The sets of the GroupSC-against-SC tables, per task (gray, color, blind color; the brief
# table of the README adds JPEG and demosaicking, whose levels are not noise levels).
GROUPING_SETS = (
    ("gray_denoise", ("BSD68", "Set12")),
    ("color_denoise", COLOR_SETS),
    ("blind_color_denoise", ("CBSD68",)),
)
BRIEF_SETS = GROUPING_SETS + (("jpeg", ("Classic5", "LIVE1")), ("demosaic", MOSAIC_SETS))


class Gain(NamedTuple):
    """GroupSC against SC at one level of one set: SC's PSNR, each grouped model's gain over
    it (NaN: not measured) and the paper's gain (NaN: not published)."""

    label: str
    task: str
    level: float
    sc: float
    here: dict
    paper: float


def grouping_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Does grouping help? GroupSC minus SC per set and sigma, gray, color and blind color
    (the set's name marked ``blind``), here (both forms) and in the paper (its GroupSC and SC
    rows, whether or not the dense model was measured here)."""
    lines = [
        "| set | σ | SC | " + " | ".join(f"{m} (gain)" for m in GROUPED)
        + " | paper: GroupSC − SC |",
        "|---|---|---|" + "---|" * len(GROUPED) + "---|",
    ]  # fmt: skip
    for g in _gains(comp, summary, GROUPING_SETS):
        cells = [_signed(g.here[m], f"{g.sc + g.here[m]:.2f} ({g.here[m]:+.2f})") for m in GROUPED]
        cells = [f"{g.level:g}", f"{g.sc:.2f}", *cells, _signed(g.paper)]
        lines.append(f"| {g.label} | " + " | ".join(cells) + " |")
    return _noted("\n".join(lines) + "\n")


def grouping_brief_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The README's grouping table: one line per task and set, the gains of both GroupSC forms
    over SC and the paper's, level after level (``a / b / c``)."""
    rows: dict[str, list[Gain]] = {}
    for g in _gains(comp, summary, BRIEF_SETS):
        rows.setdefault(g.label, []).append(g)
    head = ["set", "σ or q"] + [f"{m} − SC" for m in GROUPED] + ["paper: GroupSC − SC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, gs in rows.items():
        levels = "-" if gs[0].task == "demosaic" else " / ".join(f"{g.level:g}" for g in gs)
        columns = [[g.here[m] for g in gs] for m in GROUPED] + [[g.paper for g in gs]]
        cells = [
            "-" if all(pd.isna(v) for v in col) else " / ".join(_signed(v) for v in col)
            for col in columns
        ]  # fmt: skip
        lines.append(f"| {label} | {levels} | " + " | ".join(cells) + " |")
    return _noted("\n".join(lines) + "\n")


def _signed(value: float, text: str | None = None) -> str:
    """``-`` for NaN, else ``text`` (default: the value with its sign, 2 decimals)."""
    return "-" if pd.isna(value) else (text or f"{value:+.2f}")


def _gains(comp: pd.DataFrame, summary: pd.DataFrame, sets) -> list[Gain]:
    """A :class:`Gain` for every level SC was measured at on each set of ``sets`` (``(task,
    datasets)`` pairs) and on its stated subsets; a set's label names its task where the set's
    name alone does not."""
    out = []
    for task, datasets in sets:
        rows = comp[(comp.task == task) & (comp.metric == "psnr")]
        published = summary[
            (summary.source == "published") & (summary.task == task)
            & (summary.metric == "psnr") & summary.method.isin(["GroupSC", "SC"])
        ]  # fmt: skip
        for dataset in datasets + subsets_of(comp, task, datasets):
            out += _gain_rows(rows[rows.dataset == dataset], published, task, dataset)
    return out


def _set_label(task: str, dataset: str) -> str:
    suffix = {"blind_color_denoise": "blind", "jpeg": "JPEG", "demosaic": "mosaic"}.get(task)
    return f"{dataset}, {suffix}" if suffix else dataset


def _gain_rows(
    here: pd.DataFrame, published: pd.DataFrame, task: str, dataset: str
) -> list[Gain]:
    """The :func:`_gains` of one set (the paper's gain: that of the whole set, for a stated
    subset)."""
    out = []
    whole = dataset.split(" (first ")[0]
    for level, base in here[here.method == "SC"].set_index("level").iterrows():
        at = here[here.level == level].set_index("method").measured
        gains = {m: at[m] - base.measured if m in at.index else float("nan") for m in GROUPED}
        paper = published[(published.dataset == whole) & (published.level == level)]
        paper = paper.drop_duplicates("method").set_index("method").value
        gain = paper.get("GroupSC", float("nan")) - paper.get("SC", float("nan"))
        out.append(Gain(_set_label(task, dataset), task, level, base.measured, gains, gain))
    return out


def budget_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Every model trained here: its training budget and its seconds per BSD68 image."""
    summary = summary[~derived(summary)]
    trained = summary[(summary.source == "trained") & (summary.metric == "psnr")]
    sec = summary[summary.metric == "sec_per_image"]
    lines = ["| method | task | level | budget | s/image |", "|---|---|---|---|---|"]
    for r in trained.drop_duplicates(["method", "task", "level"]).itertuples():
        s = sec[(sec.method == r.method) & (sec.task == r.task) & (sec.level == r.level)]
        seconds = f"{s.value.iloc[0]:.1f} ({s.dataset.iloc[0]})" if len(s) else "-"
        lines.append(f"| {r.method} | {r.task} | {r.level:g} | {r.budget} | {seconds} |")
    return "\n".join(lines) + "\n"


def cost_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """CPU time of every evaluation in the summary (seconds per image x images, the threads
    it ran with in its record) and of every training (``train.json``), in minutes."""
    rows = summary[(summary.metric == "sec_per_image") & summary.n_images.notna()]
    rows = rows[~derived(rows)]  # a subset mean of a full evaluation: no CPU of its own
    rows = rows.assign(minutes=rows.value * rows.n_images.astype(float) / 60)
    lines = ["| evaluation | images | s/image | minutes |", "|---|---|---|---|"]
    for r in rows.sort_values(["task", "method", "dataset", "level"]).itertuples():
        what = f"{r.method}, {setting_label(r.dataset, r.task, r.level)}"
        lines.append(f"| {what} | {int(r.n_images)} | {r.value:.1f} | {r.minutes:.0f} |")
    runs = sorted((repo_root() / "checkpoints").glob("*/train.json"))
    lines += ["", "| training | steps | minutes | threads |", "|---|---|---|---|"]
    for path in runs:
        b = json.loads(path.read_text())
        lines.append(
            f"| {path.parent.name} | {b['steps']} | {b['train_minutes'] + b['init_minutes']:.0f} "
            f"| {b['threads']} |"
        )
    return "\n".join(lines) + "\n"


# Tolerances asked of the harness on released weights (dB of PSNR / PSNR-B)
TOLERANCE = {"DnCNN-S": 0.03, "DnCNN-B": 0.03, "DnCNN-3": 0.03}
DEFAULT_TOLERANCE = 0.05  # CDnCNN-B, DCSC's updated model, BM3D


def validation_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Released weights through the harness against their papers: every figure with a
    published counterpart, its gap and whether it is within the tolerance."""
    rows = comp[(comp.source == "released") & comp.published.notna()]
    rows = rows[rows.metric.isin(["psnr", "psnrb"]) & (rows.method != "Input")]
    lines = [
        "| method | task | dataset | level | metric | measured | published | gap | within |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.sort_values(["method", "task", "dataset", "level", "metric"]).itertuples():
        tol = TOLERANCE.get(r.method, DEFAULT_TOLERANCE)
        ok = "yes" if abs(r.delta) <= tol + 5e-3 else "no"  # printed figures: 2 decimals
        lines.append(
            f"| {r.method} | {r.task} | {r.dataset} | {r.level:g} | {r.metric.upper()} | "
            f"{r.measured:.2f} | {r.published:.2f} | {r.delta:+.2f} | {ok} (±{tol:g}) |"
        )
    text = "\n".join(lines) + "\n"
    return text + "\n" + KODAK24_NOTE if (rows.dataset == "Kodak24").any() else text


def speed_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The ``bench_sparse`` stage (``results/speed/sparse.csv``): the sparse models' seconds
    per BSD68 image and peak memory, each in its own process on the same images."""
    return _csv_table("speed/sparse.csv", "bench_sparse", "run")


def _csv_table(name: str | tuple[str, ...], stage: str, index: str) -> str:
    """``results/<name>`` (written by the DVC stage(s) ``stage``) as a table indexed by
    ``index``; several names: their rows one after the other, those that exist."""
    paths = [results_dir() / n for n in ((name,) if isinstance(name, str) else name)]
    frames = [pd.read_csv(p, keep_default_na=False).astype(str) for p in paths if p.exists()]
    if not frames:
        return f"Not measured yet (`dvc repro {stage}`).\n"
    return markdown(pd.concat(frames).set_index(index))


def mass_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """How open the groups are: ``results/neighbour_mass.csv`` (the ``neighbour_mass``
    stage) as a table."""
    return _csv_table("neighbour_mass.csv", "neighbour_mass", "run")


def kappa_init_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Dense GroupSC at initialization against kappa: ``results/kappa_init<_name>.csv`` of the
    ``kappa_init`` (gray, sigma 25 and 50), ``kappa_init_gray_5``, ``kappa_init_gray_15``,
    ``kappa_init_jpeg`` and ``kappa_init_mosaic`` stages, one table."""
    stages = ("kappa_init", "kappa_init_gray_5", "kappa_init_gray_15", "kappa_init_jpeg",
              "kappa_init_mosaic")  # fmt: skip
    return _csv_table(tuple(f"{s}.csv" for s in stages), " ".join(stages), "run")


def scaling_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Time and peak memory against image size, whole and in tiles: ``results/speed/
    scaling.csv`` (the ``bench_scaling`` stage)."""
    return _csv_table("speed/scaling.csv", "bench_scaling", "side")


def tiles_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """What tiles cost in PSNR against the whole image, per margin: ``results/speed/
    tiles.csv`` (the ``bench_scaling`` stage)."""
    return _csv_table("speed/tiles.csv", "bench_scaling", "dataset")


def floor_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Each model against its GEMM floor and BM3D, inference and training, in one run:
    ``results/speed/floor.csv`` (the ``bench_floor`` stage)."""
    return _csv_table("speed/floor.csv", "bench_floor", "case")


def speed_brief_table(comp: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The README's speed lines: seconds for one BSD68 image per model, as a ratio to BM3D
    (``results/speed/floor.csv``), and the largest image restored in tiles
    (``results/speed/scaling.csv``); the tables are in ``docs/costs.md``."""
    floor, scaling = results_dir() / "speed/floor.csv", results_dir() / "speed/scaling.csv"
    if not floor.exists():
        return "Not measured yet (`dvc repro bench_floor bench_scaling`).\n"
    f = pd.read_csv(floor, keep_default_na=False)
    f = f[f.case == "inference"]
    times = "; ".join(
        f"{r.run} {float(r.seconds):.1f} s ({r.threads} thread{'s' if int(r.threads) > 1 else ''}"
        + (f", {float(r.x_bm3d):.2f} × BM3D)" if r.run != "bm3d" else ")")
        for r in f.itertuples()
    )
    text = f"One BSD68 image at σ = 25: {times}.\n"
    if scaling.exists():
        s = pd.read_csv(scaling)
        big = s[s["mode"].str.startswith("tiles")].sort_values("side").iloc[-1]
        text += (
            f"In tiles ({big['mode'][6:]} px) a {big.side} × {big.side} image takes "
            f"{big.seconds:.0f} s at {big.threads} thread{'s' if big.threads > 1 else ''} and "
            f"{big.peak_mb} MB at most ({big.run}).\n"
        )
    return text


TABLES: dict[str, Callable[[pd.DataFrame, pd.DataFrame], str]] = {
    "gray": gray_table,
    "gray_brief": gray_brief_table,
    "grouping": grouping_table,
    "grouping_brief": grouping_brief_table,
    "jpeg": jpeg_table,
    "color": color_table,
    "color_subset": color_subset_table,
    "demosaic": demosaic_table,
    "demosaic_subset": demosaic_subset_table,
    "budgets": budget_table,
    "mass": mass_table,
    "kappa_init": kappa_init_table,
    "costs": cost_table,
    "validation": validation_table,
    "speed": speed_table,
    "scaling": scaling_table,
    "tiles": tiles_table,
    "floor": floor_table,
    "speed_brief": speed_brief_table,
}


def render(summary: pd.DataFrame) -> dict[str, str]:
    comp = one_published(comparison(summary, metrics=("psnr", "psnrb")))
    return {name: make(comp, summary) for name, make in TABLES.items()}


def rewrite(text: str, tables: dict[str, str], where: str = "") -> str:
    """``text`` with each generated block replaced; an unknown block name is an error."""

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in tables:
            raise KeyError(f"{where}: unknown table {name!r}; known: {', '.join(tables)}")
        return m.group(1) + tables[name] + m.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    path = results_dir() / "summary.csv"
    if not path.exists():
        print(f"error: {path} is missing; run `dvc pull` or `dvc repro summary`", file=sys.stderr)
        return 2
    tables = render(pd.read_csv(path))
    stale = []
    for name in FILES:
        file = repo_root() / name
        text = file.read_text()
        new = rewrite(text, tables, name)
        if new != text:
            stale.append(name)
            if not args.check:
                file.write_text(new)
    if args.check and stale:
        print(f"stale tables in {', '.join(stale)}: run `python -m groupsc.readme`")
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else "tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
