"""Which kappa should a GroupSC fine-tuned from SC start from? Its PSNR at initialization.

Run: ``PYTHONPATH=lib python benchmarks/kappa_init.py RUN:K1,K2,... [RUN:...] [--images N]
[--dataset BSD400] [--out CSV]`` (the ``kappa_init`` stage of ``dvc.yaml``).

Each ``RUN`` is a GroupSC run of ``params.yaml`` that starts from a trained SC
(``init.from_run``), with the kappas to try.
For each kappa the run's initial model is built exactly as ``groupsc.fit`` builds it (the SC's
weights, its thresholds as the SC used them, ``kappa`` filled), nothing trained, and scored on
the first N images of ``--dataset`` (a training set by default, so that the choice does not
look at a test set) with the harness's observation of the run's task and level (seeded noise
at its sigma, JPEG at its quality, the mosaic), beside the SC itself.
``Sigma_ij = exp(-||diag(kappa)(x_i - x_j)||^2)``: a larger kappa closes the groups; the
neighbour mass (mean over patches of ``sum_j Sigma_ij``, the first 56 x 56 block of the first
image) says how open they are.
"""

from __future__ import annotations

import argparse
import csv
import sys

import torch

from groupsc import fit as F
from groupsc.data import image_paths, load_image, quantize
from groupsc.degradations import task_mode
from groupsc.methods.base import TorchRestorer, _tensor
from groupsc.methods.trained import load_trained
from groupsc.metrics import psnr
from groupsc.physics import observe
from groupsc.similarity import neighbour_mass
from groupsc.train import TrainConfig


def initial_model(name: str, kappa: float) -> tuple[torch.nn.Module, TrainConfig, str]:
    """Run ``name``'s model as ``groupsc.fit`` initializes it, with ``kappa`` instead of its own."""
    params = F.load_params()
    run, settings = F.run_config(name, params, None)
    preset = settings.pop("budget_name")
    init_cfg = F.run_init(run, preset, params["train"]["presets"])
    if not init_cfg or "from_run" not in init_cfg:
        sys.exit(f"{name}: not a run that starts from a trained model (init.from_run)")
    cfg = TrainConfig(**settings)
    model = F.build_model(run["kind"], F.run_model(run, preset, params["train"]["presets"]))
    F._initializer(run, {**init_cfg, "kappa": kappa}, cfg)(model)
    return model.eval(), cfg, init_cfg["from_run"]


def score(model, pairs) -> float:
    """Mean PSNR (dB) of ``model`` over ``pairs`` of (clean image, harness observation), each
    restored as the evaluation restores it (:class:`groupsc.methods.base.TorchRestorer`)."""
    restore = TorchRestorer(model)
    return sum(psnr(quantize(restore(obs)), x) for x, obs in pairs) / len(pairs)


def first_block_mass(model, obs) -> float:
    """Neighbour mass of the model's last similarity on the observation's first 56 x 56 block."""
    crop = (slice(0, 56), slice(0, 56))
    mask = None if obs.mask is None else _tensor(obs.mask[crop])
    with torch.inference_mode():
        return neighbour_mass(model.encode(_tensor(obs.y[crop]), mask).sim)


def probe(run: str, kappas: list[float], n_images: int, dataset: str) -> list[dict]:
    """Rows ``run, sigma, kappa, psnr, gain, mass``: the parent SC first (kappa empty).
    ``sigma`` is the run's level (a JPEG quality for JPEG runs), its task's observation."""
    rows, pairs, sc = [], None, None
    for kappa in kappas:
        model, cfg, parent = initial_model(run, kappa)
        level = float(cfg.levels[0])
        if pairs is None:
            pairs = []
            for path in image_paths(dataset)[:n_images]:
                x = load_image(path, task_mode(cfg.task))
                pairs.append((x, observe(x, cfg.task, level, dataset=dataset, image=path.stem)))
            sc = score(load_trained(parent), pairs)
            rows.append({"run": parent, "sigma": level, "kappa": "", "psnr": round(sc, 4),
                         "gain": "", "mass": ""})  # fmt: skip
        mass = first_block_mass(model, pairs[0][1])
        p = score(model, pairs)
        rows.append({"run": run, "sigma": level, "kappa": kappa, "psnr": round(p, 4),
                     "gain": round(p - sc, 4), "mass": round(mass, 2)})  # fmt: skip
        print(
            f"{run} at init, kappa {kappa:g}: {p:.3f} dB ({p - sc:+.3f} vs {parent}), "
            f"neighbour mass {mass:.1f}",
            flush=True,
        )
    return rows


def _spec(text: str) -> tuple[str, list[float]]:
    run, _, kappas = text.partition(":")
    try:
        return run, [float(k) for k in kappas.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected RUN:K1,K2,... (e.g. groupsc_gray_50:3,6,12)"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", type=_spec, metavar="RUN:K1,K2,...")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--dataset", default="BSD400")
    parser.add_argument("--out", default=None, help="CSV: run, sigma, kappa, psnr, gain, mass")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [r for run, kappas in args.specs for r in probe(run, kappas, args.images, args.dataset)]
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
