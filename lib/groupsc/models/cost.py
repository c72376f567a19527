"""Compute cost of a restoration network: multiply-adds per pixel, as the papers' "FLOPs".

The NSR paper (Tables 5 and 6) gives "FLOPs per pixel" that are multiply-accumulates (DnCNN's
0.55M is its 554,112 multiply-adds per pixel), so :func:`flops_per_pixel` returns those.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def flops_per_pixel(model: torch.nn.Module, channels: int = 1, size: int = 64) -> float:
    """Multiply-adds per pixel of a no-grad forward pass on one ``(1, channels, size, size)`` input.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per
    multiply-add (so its total is halved here) and sees only matrix products and convolutions
    (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``, attention kernels): biases,
    element-wise ops (ReLU, PReLU, batch norm, residual adds, weight normalization), pooling and
    means, softmax, interpolation and ``unfold`` / ``fold`` are not counted. Costs that do not
    scale with the image (NSR's selectors and kernel mixing, per image) are spread over the
    ``size**2`` pixels, and attention over the whole image (PANet) grows with ``size``: the
    figure depends on ``size`` for those models. The model's train/eval mode is kept.
    """
    x = torch.rand(1, channels, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 2 / size**2


def cost_table(models: dict[str, torch.nn.Module], size: int = 56):
    """Parameters and multiply-adds per pixel of named gray models, as a DataFrame.

    ``size`` is the side of the test input: 56 is one GroupSC window, so the dense GroupSC
    figure is that of one block (whole images cost about (1 + overlap) times more per pixel).
    The k-NN GroupSC's sparse products are invisible to the counter (see
    :func:`flops_per_pixel`), so its figure covers the LISTA products and distances only.
    """
    import pandas as pd

    from groupsc.models import count_parameters

    rows = []
    for name, model in models.items():
        channels = getattr(model, "channels", 1)
        rows.append(
            {
                "method": name,
                "params": count_parameters(model),
                "MACs/pixel": flops_per_pixel(model, channels, size),
            }
        )
    return pd.DataFrame(rows)
