"""The evaluation harness: (method, task, dataset, level) -> per-image CSV + a summary record.

For every image of the dataset (loaded in the task's mode, see
:func:`groupsc.degradations.task_mode`), the observation is made with
:func:`groupsc.degradations.degrade` (seeded per image), restored by the method, clipped to
[0, 1] and rounded to 8 bits (as saving the result would), then scored against the clean image
with PSNR, SSIM and, for JPEG, PSNR-B. Seconds per image time the method call alone.

Resumable: with an output folder, each finished image is appended to
``<out_dir>/.partial/<key>.csv`` (ignored by git and DVC). A later run of the same evaluation
(same method, setting, seed, weights and budget) skips those images and says so, so a killed
evaluation of PANet-S or the dense GroupSC (hours on BSD68) continues where it stopped; the
images are independent (noise seeded per image), so the result is the same. ``--fresh``
discards the partial rows; they are deleted once the evaluation is written.

Command line (one evaluation; also rebuilds ``results/summary.csv``)::

    python -m groupsc.evaluate --method dncnn-s --task gray_denoise --dataset BSD68 --level 25
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from groupsc.cli import positive_int
from groupsc.data import get_dataset, image_paths, load_image, quantize
from groupsc.degradations import task_mode, validate_level
from groupsc.methods import get_method, method_info
from groupsc.metrics import psnr, psnrb, ssim
from groupsc.paths import DataMissingError, results_dir
from groupsc.physics import observe
from groupsc.runtime import set_threads


@dataclass
class EvalRecord:
    """One evaluation's summary, stored as JSON beside its per-image CSV."""

    key: str
    method: str
    source: str
    task: str
    dataset: str
    level: float
    seed: int
    n_images: int
    psnr: float
    ssim: float
    psnrb: float | None
    sec_per_image: float
    peak_rss_mb: float
    params: str
    budget: str
    threads: int


def eval_key(method: str, task: str, dataset: str, level: float, limit: int | None = None) -> str:
    """File stem of an evaluation: ``<method>__<task>__<dataset>__<level>``, and for a partial
    one (the first ``limit`` images) ``...__first<limit>``, so it never takes a full one's name.
    """
    key = f"{method}__{task}__{dataset}__{float(level):g}"
    return key if limit is None else f"{key}__first{limit}"


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during an evaluation; the message says what was kept and how to continue."""


def check_out_dir(out_dir: str | Path | None, limit: int | None) -> None:
    """Refuse a partial evaluation (``limit``) written among the full ones of the summary."""
    if limit is not None and out_dir is not None:
        if Path(out_dir).resolve() == (results_dir() / "per_image").resolve():
            raise ValueError(
                "a partial evaluation (--limit) cannot write into results/per_image, which holds "
                "the full evaluations behind results/summary.csv; leave --out-dir out (it goes "
                "to results/limited/)"
            )


PARTIAL_COLUMNS = ["name", "psnr", "ssim", "psnrb", "seconds", "peak_rss_mb"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Partial:
    """The rows of an unfinished evaluation: ``<out_dir>/.partial/<key>.csv`` + its identity.

    ``rows`` are those of an earlier run with the same identity (empty when starting over).
    """

    def __init__(self, out_dir: Path, key: str, identity: dict, fresh: bool) -> None:
        folder = out_dir / ".partial"
        self.csv, self.meta = folder / f"{key}.csv", folder / f"{key}.json"
        self.rows: list[dict] = []
        if not fresh and self.csv.exists() and self.meta.exists():
            if json.loads(self.meta.read_text()) == identity:
                self.rows = pd.read_csv(self.csv, dtype={"name": str}).to_dict("records")
        if not self.rows:  # start over: new (or stale) identity
            folder.mkdir(parents=True, exist_ok=True)
            self.meta.write_text(json.dumps(identity, indent=1) + "\n")
            pd.DataFrame(columns=PARTIAL_COLUMNS).to_csv(self.csv, index=False)

    def add(self, row: dict) -> None:
        """Append one finished image to the file."""
        pd.DataFrame([row], columns=PARTIAL_COLUMNS).to_csv(
            self.csv, mode="a", header=False, index=False, float_format="%.6f"
        )

    def remove(self) -> None:
        self.csv.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


def evaluate(
    method: str,
    task: str,
    dataset: str,
    level: float,
    *,
    seed: int = 0,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> tuple[pd.DataFrame, EvalRecord]:
    """Run one evaluation; write ``<out_dir>/<key>.csv`` and ``.json`` unless ``out_dir`` is None.

    With ``out_dir``, images finished by an interrupted run of the same evaluation are taken
    from ``<out_dir>/.partial/`` (module docstring) unless ``fresh``.
    ``limit`` (>= 1) evaluates the first images only, under its own key (:func:`eval_key`).
    Bad names, levels (:func:`groupsc.degradations.validate_level`) and limits raise one-line
    errors; an image a method cannot take (smaller than its patch) is named in the error.
    Returns the per-image table (name, psnr, ssim, psnrb, seconds) and the summary record.
    """
    info = method_info(method)
    get_dataset(dataset)  # clear error for unknown names
    level = validate_level(task, level)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, got {limit}")
    check_out_dir(out_dir, limit)
    restore = get_method(method, task, level)
    paths = image_paths(dataset)[:limit]
    key = eval_key(method, task, dataset, level, limit)
    params = getattr(restore, "params", info.params)
    budget = getattr(restore, "budget", info.budget)
    partial = None
    if out_dir is not None:
        identity = {
            "key": key,
            "seed": seed,
            "params": params,
            "budget": budget,
            "weights_sha256": getattr(restore, "weights_sha256", None),
        }
        partial = _Partial(Path(out_dir), key, identity, fresh)
    done = {row["name"]: row for row in (partial.rows if partial else [])}
    todo = [p for p in paths if p.stem not in done]
    if progress and len(todo) < len(paths):
        print(f"resuming {key}: {len(paths) - len(todo)} of {len(paths)} images already done")
    try:
        desc = f"{method} {task} {dataset} {level:g}"
        rows = _run_images(restore, todo, desc, task, dataset, level, seed, partial, progress)
    except KeyboardInterrupt:
        kept = (
            f"{len(done) + _count(partial)} of {len(paths)} images are kept in {partial.csv}; "
            "run the same command to continue"
            if partial is not None
            else "nothing was written"
        )
        raise EvaluationInterrupted(f"interrupted {key}: {kept}") from None
    by_name = {**done, **{row["name"]: row for row in rows}}
    table = pd.DataFrame([by_name[p.stem] for p in paths], columns=PARTIAL_COLUMNS)
    peak_rss = float(table.pop("peak_rss_mb").max()) if len(table) else _peak_rss_mb()
    record = EvalRecord(
        key=key,
        method=info.name,
        source=info.source,
        task=task,
        dataset=dataset,
        level=float(level),
        seed=seed,
        n_images=len(table),
        psnr=float(table.psnr.mean()),
        ssim=float(table.ssim.mean()),
        psnrb=float(table.psnrb.mean()) if task == "jpeg" else None,
        sec_per_image=float(table.seconds.mean()),
        peak_rss_mb=max(peak_rss, _peak_rss_mb()),
        params=params,
        budget=budget,
        threads=torch.get_num_threads(),
    )
    if out_dir is not None:
        out = Path(out_dir)
        table.to_csv(out / f"{record.key}.csv", index=False, float_format="%.6f")
        (out / f"{record.key}.json").write_text(json.dumps(asdict(record), indent=1) + "\n")
        partial.remove()
    return table, record


def _run_images(restore, paths, desc, task, dataset, level, seed, partial, progress) -> list[dict]:
    """Degrade, restore and score each image of ``paths``; each row is added to ``partial``."""
    mode = task_mode(task)
    rows = []
    for path in tqdm(paths, desc=desc, disable=not progress):
        clean = load_image(path, mode)
        obs = observe(clean, task, level, dataset=dataset, image=path.stem, seed=seed)
        t0 = time.perf_counter()
        try:
            est = restore(obs)
        except ValueError as err:  # e.g. an image smaller than the model's patch
            raise ValueError(f"{path}: {err}") from None
        seconds = time.perf_counter() - t0
        if est.shape != clean.shape:
            raise RuntimeError(f"{path.name}: the method returned {est.shape} for {clean.shape}")
        est = quantize(est)
        row = {
            "name": path.stem,
            "psnr": psnr(est, clean),
            "ssim": ssim(est, clean),
            "psnrb": psnrb(est, clean) if task == "jpeg" else np.nan,
            "seconds": seconds,
            "peak_rss_mb": _peak_rss_mb(),
        }
        rows.append(row)
        if partial is not None:
            partial.add(row)
    return rows


def _count(partial: _Partial) -> int:
    """Rows in the partial file beyond those it held at the start."""
    return len(pd.read_csv(partial.csv)) - len(partial.rows)


def noise_spread(
    method: str, task: str, dataset: str, level: float, seeds: list[int], progress: bool = True
) -> pd.DataFrame:
    """Set-average PSNR and SSIM for several noise seeds: how much a figure moves with the draw.

    Published figures come from one unknown noise draw; this spread is the tolerance within
    which a re-run with another draw can be expected to agree.
    """
    rows = []
    for seed in seeds:
        _, rec = evaluate(method, task, dataset, level, seed=seed, progress=progress)
        rows.append({"seed": seed, "psnr": rec.psnr, "ssim": rec.ssim})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", required=True, help="method key, see groupsc.methods")
    p.add_argument("--task", required=True, help="gray_denoise | color_denoise | jpeg | ...")
    p.add_argument("--dataset", required=True, help="dataset name, see groupsc.data")
    p.add_argument(
        "--level", default=None, help="sigma (0-255) or JPEG quality (1-100); none for demosaic"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="first N images only: written as <key>__firstN to results/limited/, never into "
        "results/per_image or the summary",
    )
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    p.add_argument(
        "--out-dir", default=None, help="default: results/per_image (results/limited with --limit)"
    )
    p.add_argument("--no-summary", action="store_true", help="do not rebuild results/summary.csv")
    p.add_argument(
        "--fresh", action="store_true", help="ignore the images of an interrupted run (.partial/)"
    )
    p.add_argument(
        "--spread-seeds",
        type=int,
        nargs="+",
        default=None,
        help="instead: set averages for these noise seeds, to <out-dir>/<key>__seeds.csv",
    )
    args = p.parse_args(argv)
    set_threads(args.threads)
    try:
        level = validate_level(args.task, args.level)
        if args.spread_seeds:
            return _spread_main(args, level)
        out_dir = args.out_dir or results_dir() / ("limited" if args.limit else "per_image")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        _, rec = evaluate(
            args.method,
            args.task,
            args.dataset,
            level,
            seed=args.seed,
            limit=args.limit,
            out_dir=out_dir,
            fresh=args.fresh,
        )
    except (DataMissingError, KeyError, ValueError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(
            f"\n{err}" if isinstance(err, EvaluationInterrupted) else "\ninterrupted",
            file=sys.stderr,
        )
        return 130
    extra = f"  PSNR-B {rec.psnrb:.2f}" if rec.psnrb is not None else ""
    partial = f" of {len(image_paths(args.dataset))}, written to {out_dir}" if args.limit else ""
    print(
        f"{rec.method} {rec.task} {rec.dataset} {rec.level:g}: PSNR {rec.psnr:.2f} dB  "
        f"SSIM {rec.ssim:.4f}{extra}  {rec.sec_per_image:.2f} s/image  "
        f"peak RSS {rec.peak_rss_mb:.0f} MB  ({rec.n_images} images{partial})"
    )
    if not args.no_summary and not args.limit:
        from groupsc.results import write_summary

        write_summary()
    return 0


def _spread_main(args: argparse.Namespace, level: float) -> int:
    """``--spread-seeds``: set averages for several noise seeds, to ``<key>__seeds.csv``."""
    out_dir = Path(args.out_dir or results_dir() / "noise_spread")
    out_dir.mkdir(parents=True, exist_ok=True)
    table = noise_spread(args.method, args.task, args.dataset, level, args.spread_seeds)
    key = eval_key(args.method, args.task, args.dataset, level)
    table.to_csv(out_dir / f"{key}__seeds.csv", index=False, float_format="%.6f")
    print(table.to_string(index=False))
    print(
        f"PSNR over {len(table)} seeds: mean {table.psnr.mean():.3f}, "
        f"std {table.psnr.std():.3f}, range {table.psnr.max() - table.psnr.min():.3f} dB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
