"""Does kappa matter? A trained GroupSC's PSNR with its kappa scaled, nothing retrained.

Run: ``PYTHONPATH=lib python benchmarks/kappa_sweep.py RUN [--images N] [--scales 1 2 3]``.
For each scale s, kappa <- s * kappa (Sigma_ij = exp(-||diag(kappa)(x_i - x_j)||^2): a larger
kappa closes the groups), and the mean PSNR over the first N BSD68 images at the run's sigma
(the harness's seeded noise, the same input for every scale) with the neighbour mass of the
first image's last similarity (:func:`groupsc.similarity.neighbour_mass`).
"""

from __future__ import annotations

import argparse

import torch
from kappa_init import first_block_mass, score  # this folder's script

from groupsc.data import image_paths, load_image
from groupsc.methods.trained import load_trained
from groupsc.physics import observe


def sweep(run: str, n_images: int, scales: list[float]) -> None:
    model = load_trained(run).eval()
    sigma = float(model.train_config["levels"][0])
    kappa = model.kappa.detach().clone()
    images = []
    for path in image_paths("BSD68")[:n_images]:
        clean = load_image(path, "gray")
        images.append(
            (clean, observe(clean, "gray_denoise", sigma, dataset="BSD68", image=path.stem))
        )
    for scale in scales:
        model.kappa.data.copy_(kappa * scale)
        mass = first_block_mass(model, images[0][1])
        p = score(model, images)
        print(
            f"{run} kappa x{scale:g} (mean {kappa.mean().item() * scale:.3f}): "
            f"PSNR {p:.3f} dB on {len(images)} BSD68 images, "
            f"neighbour mass {mass:.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 2, 3, 5])
    args = parser.parse_args()
    torch.set_num_threads(1)
    sweep(args.run, args.images, args.scales)


if __name__ == "__main__":
    main()
