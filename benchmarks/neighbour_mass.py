"""How open are the groups? The neighbour mass of every trained non-local model.

Run (the ``neighbour_mass`` stage of ``dvc.yaml``)::

    PYTHONPATH=lib python benchmarks/neighbour_mass.py --images 8 --out results/neighbour_mass.csv

For every GroupSC / CSR run of ``params.yaml`` (``train.runs`` and ``train.finetunes``) with a
checkpoint: the centre ``window x window`` crops of the harness's observations of the first
``--images`` images of a test set of the run's task and level (:data:`TEST_SETS`: BSD68 noisy at
the run's sigma, CBSD68 for color models and mosaics (a blind model: at its middle noise
bin, told that sigma), LIVE1's Y channel for JPEG) go through the
model's unrolled steps as one batch of blocks; the similarity of the last refresh gives the
neighbour mass (:func:`groupsc.similarity.neighbour_mass`: :math:`\\sum_{j \\ne i}
\\Sigma_{ji}` averaged over the patches; 0 is SC, every neighbour at similarity 1 gives
``candidates``: k - 1 for the k-NN models, the whole window for the dense ones). Columns: run,
kind, graph (dense / knn), forward (authors / legacy), task, level (sigma, JPEG quality; 0 for
mosaics), kappa (mean), candidates, neighbour_mass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from groupsc.data import image_paths, load_image
from groupsc.fit import load_params
from groupsc.methods.trained import load_trained
from groupsc.paths import repo_root
from groupsc.physics import observe
from groupsc.similarity import neighbour_mass

NON_LOCAL = ("groupsc", "csr")


def non_local_runs(params: dict) -> list[str]:
    """Names of the GroupSC / CSR runs of ``train.runs`` and ``train.finetunes``."""
    train = params["train"]
    runs = {**train["runs"], **train["finetunes"]}
    return [name for name, run in runs.items() if run["kind"] in NON_LOCAL]


# The test images each task's models are measured on (a set of the task's evaluation).
TEST_SETS = {
    "gray_denoise": ("BSD68", "gray"),
    "color_denoise": ("CBSD68", "rgb"),
    "jpeg": ("LIVE1", "y"),
    "demosaic": ("CBSD68", "rgb"),
    "blind_color_denoise": ("CBSD68", "rgb"),
}


def centre_crops(
    task: str, level: float, size: int, n_images: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(n, C, size, size)`` centre crops of the harness's observations (:func:`observe`) of
    the first images of the task's test set, and of their masks (None but for mosaics)."""
    dataset, mode = TEST_SETS[task]

    def crop(a: np.ndarray) -> torch.Tensor:
        top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
        a = np.atleast_3d(a[top : top + size, left : left + size])
        return torch.from_numpy(a.transpose(2, 0, 1).copy()).float()

    crops, masks = [], []
    for path in image_paths(dataset)[:n_images]:
        obs = observe(load_image(path, mode), task, level, dataset=dataset, image=path.stem)
        crops.append(crop(obs.y))
        masks.append(None if obs.mask is None else crop(obs.mask))
    return torch.stack(crops), None if masks[0] is None else torch.stack(masks)


def measure(run: str, n_images: int) -> dict:
    model = load_trained(run).eval()
    task, levels = model.train_config["task"], model.train_config["levels"]
    level = float(levels[len(levels) // 2])  # a blind model: its middle bin, told the true sigma
    with torch.inference_mode():
        enc = model.encode(*centre_crops(task, level, model.window, n_images), sigma=level)
    span = model.window - model.patch + 1
    return {
        "run": run,
        "kind": model.prox if model.prox != "group" else "groupsc",
        "graph": "knn" if model.knn is not None else "dense",
        "forward": "authors" if model.centered_similarity else "legacy",
        "task": task,
        "level": level,
        "kappa": round(model.kappa.mean().item(), 4),
        "candidates": model.knn["k"] - 1 if model.knn is not None else span * span - 1,
        "neighbour_mass": round(neighbour_mass(enc.sim), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in non_local_runs(load_params()):
        if not (repo_root() / "checkpoints" / run / "model.pt").exists():
            print(f"{run}: no checkpoint (train it first)")
            continue
        rows.append(measure(run, args.images))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
