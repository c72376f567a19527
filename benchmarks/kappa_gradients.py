"""Why kappa did not move: its gradient, and Adam's step on it, for trained GroupSC models.

Run: ``PYTHONPATH=lib python benchmarks/kappa_gradients.py [RUN ...]`` (default: the sigma-25
GroupSC checkpoints). For each model, on the training batches 0..3 of its run (batch 8 of
56 x 56 BSD400 crops at sigma 25): the mean |dL/dkappa| and |dL/dlam| (loss of
``groupsc.train.loss_fn``), the neighbour mass of the last similarity
(:func:`groupsc.similarity.neighbour_mass`) and kappa's mean. Adam moves a parameter by about
``lr * m / (sqrt(v) + eps)``: a gradient far below ``eps`` moves it by ``lr * |g| / eps``.
"""

from __future__ import annotations

import sys

import torch

from groupsc.data import load_dataset
from groupsc.methods.trained import load_trained
from groupsc.similarity import neighbour_mass
from groupsc.train import TrainConfig, loss_fn, make_batch

RUNS = [
    "groupsc_gray_25",
    "groupsc-knn_gray_25",
    "groupsc-knn-ft_gray_25",
    "groupsc-knn-dict_gray_25",
]


def report(run: str, images) -> str:
    model = load_trained(run)
    model.train()
    cfg = TrainConfig(**{**model.train_config, "batch": 8})
    g_kappa, g_lam, mass = [], [], []
    for step in range(4):
        clean, obs, levels, _ = make_batch(images, cfg, step)
        model.zero_grad()
        loss_fn(model, clean, obs, levels).backward()
        g_kappa.append(model.kappa.grad.abs().mean().item())
        g_lam.append(model.lam.grad.abs().mean().item())
        with torch.no_grad():
            mass.append(neighbour_mass(model.encode(obs[:1]).sim))
    opts = "authors'" if getattr(model, "centered_similarity", False) else "legacy"
    return (
        f"{run:26s} {opts:8s} kappa {model.kappa.mean().item():6.3f}  "
        f"|dL/dkappa| {sum(g_kappa) / 4:.2e}  |dL/dlam| {sum(g_lam) / 4:.2e}  "
        f"neighbour mass {sum(mass) / 4:.3f}"
    )


def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    images = [img for _, img in load_dataset("BSD400", "gray")]
    for run in runs:
        try:
            print(report(run, images), flush=True)
        except Exception as err:  # a run not trained yet
            print(f"{run}: {err}")


if __name__ == "__main__":
    main(sys.argv[1:] or RUNS)
