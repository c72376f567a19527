"""Open companion to *Fully Trainable and Interpretable Non-Local Sparse Models for Image
Restoration* (GroupSC, Lecouat, Ponce & Mairal, ECCV 2020).

Submodules:

- :mod:`groupsc.paths`: where the repository, ``data/`` and ``results/`` live.
- :mod:`groupsc.data`: dataset registry and image loading (gray, RGB, Y).
- :mod:`groupsc.degradations`: seeded Gaussian noise, JPEG, Bayer mosaicking.
- :mod:`groupsc.metrics`: PSNR, SSIM, PSNR-B.
- :mod:`groupsc.models`: the networks (DnCNN, DCSC, ...).
- :mod:`groupsc.released`: loaders for the authors' released weights.
- :mod:`groupsc.methods`: every restoration method behind one callable interface.
- :mod:`groupsc.evaluate`: the evaluation harness (per-image CSV + ``results/summary.csv``).
- :mod:`groupsc.results`: the tidy summary table and the published rows.
"""

__version__ = "0.1.0"
