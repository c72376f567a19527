"""DnCNN: Zhang, Zuo, Chen, Meng & Zhang, "Beyond a Gaussian Denoiser: Residual Learning of
Deep CNN for Image Denoising", IEEE TIP 2017.

Reference settings (paper section III-A, Table I):

=============  ======  ========  ============  =============================================
model          depth   features  in/out chans  parameters
=============  ======  ========  ============  =============================================
DnCNN-S        17      64        1             556,096 with BN (555,137 once BN is folded)
DnCNN-B / -3   20      64        1             667,008 with BN (665,921 folded)
CDnCNN-B       20      64        3             669,312 with BN (668,227 folded)
=============  ======  ========  ============  =============================================

Layer 1 is Conv(3x3)+ReLU, layers 2..D-1 Conv+BN+ReLU, layer D a Conv; the network predicts
the residual ``v = R(y)`` and the estimate is ``x = y - R(y)``. The authors' released
MatConvNet files have their BN folded into the convolutions, so they load into the
``batch_norm=False`` variant (every conv with a bias).
"""

from __future__ import annotations

import torch
from torch import nn


class DnCNN(nn.Module):
    """Residual denoiser ``x = y - R(y)``.

    Args:
        depth: number of conv layers D (17 for DnCNN-S, 20 for DnCNN-B/-3).
        channels: image channels (1 gray, 3 color).
        features: feature maps per hidden layer.
        batch_norm: BN in layers 2..D-1 (training); ``False`` for folded released weights.
    Input/output: ``(N, C, H, W)`` float in [0, 1] (any H, W).
    """

    def __init__(
        self, depth: int = 17, channels: int = 1, features: int = 64, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"DnCNN needs depth >= 3, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(features, eps=1e-4, momentum=0.05))
            layers.append(nn.ReLU(True))
        layers.append(nn.Conv2d(features, channels, 3, padding=1, bias=not batch_norm))
        self.body = nn.Sequential(*layers)
        self.depth, self.channels, self.features = depth, channels, features
        self.batch_norm = batch_norm

    def convs(self) -> list[nn.Conv2d]:
        """The D convolution layers in order."""
        return [m for m in self.body if isinstance(m, nn.Conv2d)]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(
                f"DnCNN expects (N, {self.channels}, H, W) input, got {tuple(y.shape)}"
            )
        return y - self.body(y)
