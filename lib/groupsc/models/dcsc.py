"""DCSC: Fu, Zha, Wu, Ding & Paisley, "JPEG Artifacts Reduction via Deep Convolutional Sparse
Coding", ICCV 2019.

Structure (paper Fig. 1 and eqs. 1, 3, 5, 6; the released ``network.py``):

- multi-scale features ``X = concat_d Conv_d(J)`` with dilations d in {1, 2, 4}, 3x3 kernels,
  ``branch_maps`` maps each, with bias, no activation;
- convolutional LISTA on X: ``G = Conv_G(X)`` (no bias), ``U_0 = relu(G)``,
  ``U_{r+1} = relu(G + S * U_r)`` for r < steps, with one S shared by all steps (no bias);
- reconstruction ``O = clip(J + Conv_res(U_R), 0, 1)`` (a residual, with bias).

The ReLU with the bias-free convolution plays the soft threshold of ISTA (non-negative codes).

Reference settings:

=================  ===========  ========  =====  ===========
variant            branch_maps  channels  steps  parameters
=================  ===========  ========  =====  ===========
paper, Table 1     32           64        40     93,697 (0.94e5)
updated (errata)   48           128       40     315,937
=================  ===========  ========  =====  ===========

The paper trains with the MAE loss on Y-channel 80x80 patches, one model for q = 10, 20, 30.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DCSC(nn.Module):
    """Deep convolutional sparse coding for JPEG deblocking (gray / Y input).

    Args:
        branch_maps: feature maps per dilated branch.
        channels: channels of the sparse codes U.
        steps: unrolled LISTA iterations R.
        dilations: dilation factors of the feature branches.
    Input/output: ``(N, 1, H, W)`` float in [0, 1].
    """

    def __init__(
        self,
        branch_maps: int = 32,
        channels: int = 64,
        steps: int = 40,
        dilations: tuple[int, ...] = (1, 2, 4),
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(1, branch_maps, 3, padding=d, dilation=d) for d in dilations
        )
        self.g = nn.Conv2d(branch_maps * len(dilations), channels, 3, padding=1, bias=False)
        self.s = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.residual = nn.Conv2d(channels, 1, 3, padding=1)
        self.steps = steps
        self.dilations = tuple(dilations)

    def _g(self, j: torch.Tensor) -> torch.Tensor:
        if j.ndim != 4 or j.shape[1] != 1:
            raise ValueError(f"DCSC expects (N, 1, H, W) input, got {tuple(j.shape)}")
        return self.g(torch.cat([b(j) for b in self.branches], dim=1))

    def codes(self, j: torch.Tensor) -> list[torch.Tensor]:
        """The sparse codes ``[U_0, ..., U_R]``, each ``(N, channels, H, W)``."""
        g = self._g(j)
        out = [F.relu(g)]
        for _ in range(self.steps):
            out.append(F.relu(g + self.s(out[-1])))
        return out

    def forward(self, j: torch.Tensor) -> torch.Tensor:
        g = self._g(j)
        u = F.relu(g)
        for _ in range(self.steps):
            u = F.relu(g + self.s(u))
        return torch.clamp(j + self.residual(u), 0.0, 1.0)
