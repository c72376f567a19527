"""Restoration networks, one module per paper (see each module's docstring for its settings)."""

from groupsc.models.dcsc import DCSC
from groupsc.models.dncnn import DnCNN
from groupsc.models.nsr import NSR, SparseConv2d
from groupsc.models.panet import PANet, PyramidAttention


def count_parameters(model) -> int:
    """Number of trainable parameters of a ``torch.nn.Module``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "DCSC",
    "NSR",
    "DnCNN",
    "PANet",
    "PyramidAttention",
    "SparseConv2d",
    "count_parameters",
]
