"""Restoration networks, one module per paper (see each module's docstring for its settings)."""

from groupsc.models.dcsc import DCSC
from groupsc.models.dncnn import DnCNN


def count_parameters(model) -> int:
    """Number of trainable parameters of a ``torch.nn.Module``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["DCSC", "DnCNN", "count_parameters"]
