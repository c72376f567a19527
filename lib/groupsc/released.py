"""Loaders for the authors' released weights in ``data/pretrained/``.

- DnCNN (MatConvNet SimpleNN, MATLAB v7.3 = HDF5, read with h5py): conv/ReLU stacks with
  BatchNorm folded into the convolutions. Filters are ``[3,3,Cin,Cout]`` in MATLAB order, which
  h5py returns reversed as ``[Cout,Cin,kw,kh]``; we transpose to PyTorch's ``[Cout,Cin,kh,kw]``.
- DCSC "updated model" (ICCV 2019 errata): a ``.npz`` of the TF1 checkpoint, kernels in TF's
  ``[kh,kw,in,out]`` layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from groupsc.models import DCSC, DnCNN
from groupsc.paths import require_data

DNCNN_FILES = {
    "DnCNN-S-15": "pretrained/dncnn/dncnn_s15.mat",
    "DnCNN-S-25": "pretrained/dncnn/dncnn_s25.mat",
    "DnCNN-S-50": "pretrained/dncnn/dncnn_s50.mat",
    "DnCNN-B": "pretrained/dncnn/dncnn_b_gray.mat",
    "CDnCNN-B": "pretrained/dncnn/cdncnn_b_color.mat",
    "DnCNN-3": "pretrained/dncnn/dncnn3.mat",
}
DCSC_FILE = "pretrained/dcsc/dcsc_updated_model.npz"


def _chars(dataset) -> str:
    """Decode a MATLAB char array (uint16 codes) read through h5py."""
    return "".join(chr(int(c)) for c in np.asarray(dataset).ravel())


def read_matconvnet_convs(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``(weight [Cout,Cin,kh,kw], bias [Cout])`` of every conv layer of a SimpleNN file."""
    import h5py

    convs = []
    with h5py.File(path, "r") as f:
        refs = np.asarray(f["net"]["layers"]).ravel()
        for ref in refs:
            layer = f[ref]
            if _chars(layer["type"]) != "conv":
                continue
            wref, bref = np.asarray(layer["weights"]).ravel()[:2]
            w = np.asarray(f[wref], dtype=np.float32)
            b = np.asarray(f[bref], dtype=np.float32).ravel()
            if w.ndim == 3:  # last layer with Cout = 1, stored squeezed as [3,3,Cin]
                w = w[None]
            convs.append((np.ascontiguousarray(w.transpose(0, 1, 3, 2)), b))
    return convs


def load_dncnn(name: str) -> DnCNN:
    """A released DnCNN: ``DnCNN-S-15/25/50``, ``DnCNN-B``, ``CDnCNN-B`` or ``DnCNN-3``."""
    if name not in DNCNN_FILES:
        raise KeyError(f"unknown released DnCNN {name!r}; known: {', '.join(DNCNN_FILES)}")
    convs = read_matconvnet_convs(require_data(DNCNN_FILES[name]))
    channels = convs[0][0].shape[1]
    model = DnCNN(depth=len(convs), channels=channels, batch_norm=False)
    for conv, (w, b) in zip(model.convs(), convs, strict=True):
        if tuple(conv.weight.shape) != w.shape:
            raise ValueError(f"{name}: weight shape {w.shape} != model {tuple(conv.weight.shape)}")
        conv.weight.data.copy_(torch.from_numpy(w))
        conv.bias.data.copy_(torch.from_numpy(b))
    return model.eval()


def load_dcsc_updated() -> DCSC:
    """The DCSC authors' updated model (48 maps per branch, 128 channels, 40 steps), eval mode."""
    arrays = np.load(require_data(DCSC_FILE))

    def conv(key: str) -> torch.Tensor:  # TF [kh,kw,in,out] -> torch [out,in,kh,kw]
        return torch.from_numpy(np.ascontiguousarray(arrays[key].transpose(3, 2, 0, 1)))

    branch_maps = arrays["DCSC/X/X1/kernel"].shape[3]
    channels = arrays["DCSC/G_X/G_X/kernel"].shape[3]
    model = DCSC(branch_maps=branch_maps, channels=channels, steps=40)
    for branch, d in zip(model.branches, (1, 2, 4), strict=True):
        branch.weight.data.copy_(conv(f"DCSC/X/X{d}/kernel"))
        branch.bias.data.copy_(torch.from_numpy(arrays[f"DCSC/X/X{d}/bias"]))
    model.g.weight.data.copy_(conv("DCSC/G_X/G_X/kernel"))
    model.s.weight.data.copy_(conv("DCSC/optimization/S_U/kernel"))
    model.residual.weight.data.copy_(conv("DCSC/recons/residual/kernel"))
    model.residual.bias.data.copy_(torch.from_numpy(arrays["DCSC/recons/residual/bias"]))
    return model.eval()
