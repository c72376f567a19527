"""NSR: Fan, Yu, Mei, Zhang, Fu, Liu & Huang, "Neural Sparse Representation for Image
Restoration", NeurIPS 2020.

Sparse-group convolution (paper section 3, eqs. 7, 9, 10; Fig. 3): a conv with ``out`` output
channels stores ``k`` sparsity groups of kernels, each split into ``d`` cardinal groups of
``out / d`` channels. From the globally average-pooled input, a linear layer predicts ``k x d``
logits; a softmax over the ``k`` groups (temperature ``tau``, one softmax per cardinal group)
gives ``gamma in (0, 1)^{d x k}``, and the conv applies the mixed kernel

    W_hat = concat_{j=1..d} sum_{i=1..k} gamma_{j,i} W^{j,i}     (eq. 10; biases mixed alike)

so its cost is that of a single group (``k`` times less than the ``k * out`` channels it stores).
Because a conv is linear, this is exactly ``concat_j sum_i gamma_{j,i} (W^{j,i} * x)``; the
approximation of eq. 9 is only in moving the weights across the ReLU between two such convs.
Each conv has its own selector (the paper: independent weights for ``W_1`` and ``W_2`` are
better than shared ones). ``k = 1`` is a plain conv.

Network (the authors' ``wdsr_nsr`` model): head conv 3x3, ``blocks`` residual blocks
``x + conv(relu(conv(x)))`` with the inner width ``features * width`` (WDSR "width
multiplier"), both block convs sparse, tail conv 3x3, global skip from the input
(``x = y + tail(body(head(y)))``).

Denoising / JPEG variants (section 4.3, Tables 5 and 6; gray input). The paper gives only
FLOPs for them, counted as multiply-accumulates per pixel (DnCNN's 0.55M = its 554,112 MACs)::

    ========  ======  ========  =====  ======  ===========  ================  =================
    variant   blocks  features  width  groups  cardinality  parameters (ours) MACs/px ours/paper
    ========  ======  ========  =====  ======  ===========  ================  =================
    baseline  16      32        2      1       -            591,969           0.590M / 0.59M
    sparse-   16      32        1      2       16           626,273           0.295M / 0.30M
    sparse+   16      32        2      2       16           1,233,505         0.590M / 0.60M
    ========  ======  ========  =====  ======  ===========  ================  =================

The paper's words on model size check against the conv kernels: sparse- "keeps the model size
as baseline" (589,824 kernel weights in the blocks for both) and sparse+ "doubles model
capacity" (1,179,648); the rest are biases and the selectors' linear layers (33,792 for sparse-,
50,176 for sparse+). Our MACs count the convolutions with the mixed kernels; pooling (one add
per input channel and pixel, +1,536/px for sparse+), the selectors and the kernel mixing (per
image or patch, about +500/px on 48x48 patches) come on top: sparse+ is 0.593M, below the
paper's 0.60M, which we cannot account for; baseline and sparse- round to the paper's figures.

Unstated in the paper, taken from the authors' code (``ychfan/pt_ir``, ``models/wdsr_nsr.py``):
the selector is ONE linear layer (no hidden layer) on the mean over H and W of the conv input;
``tau = 1`` (the best row of Table 1); cardinality 16 for denoising (the code default and the
paper's SR setting); weight normalization on every conv (``weight_norm=True``: one extra
gain per stored output channel). With those, a 64-feature, 4-group block has 304,256
parameters, which reproduces the README's 4,877,812 for "EDSR+NSR x2" exactly (see the tests).
The authors also subtract a dataset mean at the input and add it back; with the global skip
this only changes the zero padding of the head conv, and we leave it out. They pool over the
whole input: in training a patch (the paper: "the pooling operation should be with respect to
a specific patch size instead of the whole image"), and at test time they run large images as
overlapping patches, which :meth:`NSR.forward_patches` reproduces.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

NSR_VARIANTS: dict[str, dict[str, float]] = {
    "baseline": {"blocks": 16, "features": 32, "width": 2, "groups": 1},
    "sparse-": {"blocks": 16, "features": 32, "width": 1, "groups": 2},
    "sparse+": {"blocks": 16, "features": 32, "width": 2, "groups": 2},
}


class SparseConv2d(nn.Module):
    """Conv whose kernel is a softmax mixture of ``groups`` kernel banks (eq. 10).

    Args:
        in_channels, out_channels, kernel_size: as ``nn.Conv2d`` (stride 1, "same" padding).
        groups: sparsity groups k (kernel banks stored).
        cardinality: cardinal groups d (``out_channels`` must be divisible by d); each has its
            own softmax over the k groups.
        temperature: softmax temperature tau (``softmax(logits / tau)``).
    Parameters: ``weight (k*out, in, kh, kw)`` laid out as ``(k, d, out/d, in, kh, kw)`` (group
    major, as in the authors' code), ``bias (k*out)``, ``select = Linear(in, k*d)`` whose output
    is read as ``(k, d)``. ``last_selection`` holds the latest ``gamma`` as ``(N, k, d)``.
    Input/output: ``(N, in, H, W) -> (N, out, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        groups: int = 2,
        cardinality: int = 16,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if out_channels % cardinality:
            raise ValueError(
                f"out_channels {out_channels} not divisible by cardinality {cardinality}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.in_channels, self.out_channels, self.kernel_size = (
            in_channels,
            out_channels,
            kernel_size,
        )
        self.groups, self.cardinality, self.temperature = groups, cardinality, temperature
        self.weight = nn.Parameter(
            torch.empty(groups * out_channels, in_channels, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(groups * out_channels))
        self.select = nn.Linear(in_channels, groups * cardinality)
        self.last_selection: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default initialization, per stored kernel."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.in_channels * self.kernel_size**2)
        nn.init.uniform_(self.bias, -bound, bound)

    def selection(self, x: torch.Tensor) -> torch.Tensor:
        """``gamma``: ``(N, k, d)``, softmax over k, from the spatial mean of ``x``."""
        logits = self.select(x.mean(dim=(-2, -1))).view(-1, self.groups, self.cardinality)
        return torch.softmax(logits / self.temperature, dim=1)

    def mixed(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample kernels ``(N, out, in, kh, kw)`` and biases ``(N, out)`` for ``gamma``."""
        k, d, o = self.groups, self.cardinality, self.out_channels // self.cardinality
        w = self.weight.view(k, d, o, *self.weight.shape[1:])
        weight = torch.einsum("nkd,kdoihw->ndoihw", gamma, w).flatten(1, 2)
        bias = torch.einsum("nkd,kdo->ndo", gamma, self.bias.view(k, d, o)).flatten(1)
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SparseConv2d expects (N, {self.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        n, _, h, w = x.shape
        gamma = self.selection(x)
        self.last_selection = gamma.detach()
        weight, bias = self.mixed(gamma)
        out = F.conv2d(
            x.reshape(1, n * self.in_channels, h, w),
            weight.reshape(n * self.out_channels, *weight.shape[2:]),
            bias.reshape(-1),
            padding=self.kernel_size // 2,
            groups=n,
        )
        return out.view(n, self.out_channels, h, w)


def _conv(
    cin: int, cout: int, groups: int, cardinality: int, temperature: float, wn: bool
) -> nn.Module:
    conv: nn.Module
    if groups == 1:
        conv = nn.Conv2d(cin, cout, 3, padding=1)
    else:
        conv = SparseConv2d(cin, cout, 3, groups, cardinality, temperature)
    return _weight_norm(conv, dim=0) if wn else conv


class Block(nn.Module):
    """WDSR-style residual block ``x + conv2(relu(conv1(x)))`` with sparse convs."""

    def __init__(
        self,
        features: int,
        hidden: int,
        groups: int = 1,
        cardinality: int = 16,
        temperature: float = 1.0,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(features, hidden, groups, cardinality, temperature, weight_norm)
        self.conv2 = _conv(hidden, features, groups, cardinality, temperature, weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class NSR(nn.Module):
    """Residual denoiser / deblocker with sparse-group convolutions (baseline, sparse-, sparse+).

    Args:
        channels: image channels (1: gray / Y).
        features: channels between blocks (32).
        blocks: residual blocks (16).
        width: width multiplier inside the blocks (hidden = ``features * width``).
        groups: sparsity groups k per conv (1 = plain convs, the baseline).
        cardinality: cardinal groups d per sparse conv.
        temperature: softmax temperature tau.
        weight_norm: weight-normalize every conv as the authors' code does (adds parameters).
    Input/output: ``(N, channels, H, W)`` float in [0, 1]; ``x = y + R(y)``, not clamped.
    """

    def __init__(
        self,
        channels: int = 1,
        features: int = 32,
        blocks: int = 16,
        width: float = 2,
        groups: int = 1,
        cardinality: int = 16,
        temperature: float = 1.0,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        hidden = int(features * width)
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.head = _conv(channels, features, 1, 1, 1.0, weight_norm)
        self.body = nn.Sequential(
            *(
                Block(features, hidden, groups, cardinality, temperature, weight_norm)
                for _ in range(blocks)
            )
        )
        self.tail = _conv(features, channels, 1, 1, 1.0, weight_norm)
        self.channels, self.features, self.blocks, self.hidden = channels, features, blocks, hidden
        self.groups, self.cardinality = groups, cardinality

    @classmethod
    def variant(cls, name: str, channels: int = 1, **kwargs) -> NSR:
        """``"baseline"``, ``"sparse-"`` or ``"sparse+"`` of the denoising / JPEG tables."""
        if name not in NSR_VARIANTS:
            raise KeyError(f"unknown NSR variant {name!r}; known: {', '.join(NSR_VARIANTS)}")
        spec = NSR_VARIANTS[name]
        return cls(
            channels=channels,
            features=int(spec["features"]),
            blocks=int(spec["blocks"]),
            width=spec["width"],
            groups=int(spec["groups"]),
            **kwargs,
        )

    def sparse_convs(self) -> list[SparseConv2d]:
        """The sparse convs in order (``last_selection`` of each for visualization)."""
        return [m for m in self.modules() if isinstance(m, SparseConv2d)]

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per pixel of the convolutions as run (mixed kernels, 3x3)."""
        per_block = 2 * self.features * self.hidden * 9
        return 2 * self.channels * self.features * 9 + self.blocks * per_block

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"NSR expects (N, {self.channels}, H, W) input, got {tuple(y.shape)}")
        return y + self.tail(self.body(self.head(y)))

    def forward_patches(
        self, y: torch.Tensor, patch: int = 48, margin: int = 8, batch: int = 64
    ) -> torch.Tensor:
        """Run overlapping ``patch x patch`` tiles separately (so the selectors pool per tile).

        Tiles step by ``patch - 2 * margin``; each contributes its centre (its full extent at
        the image borders), so the kept parts tile the image exactly. Images no larger than
        ``patch`` go through :meth:`forward` whole. ``batch`` tiles are run at a time.
        """
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(f"NSR expects (N, {self.channels}, H, W) input, got {tuple(y.shape)}")
        if patch <= 2 * margin:
            raise ValueError(f"patch ({patch}) must exceed 2 * margin ({margin})")
        h, w = y.shape[-2:]

        def starts(size: int) -> list[int]:
            if size <= patch:
                return [0]
            step = patch - 2 * margin
            return sorted({*range(0, size - patch, step), size - patch})

        rows, cols = starts(h), starts(w)
        ph, pw = min(patch, h), min(patch, w)
        corners = [(r, c) for r in rows for c in cols]
        out = torch.empty_like(y)
        for i in range(0, len(corners), batch):
            chunk = corners[i : i + batch]
            tiles = torch.cat([y[..., r : r + ph, c : c + pw] for r, c in chunk])
            res = self.forward(tiles).split(y.shape[0])
            for (r, c), t in zip(chunk, res, strict=True):
                top = 0 if r == 0 else margin
                left = 0 if c == 0 else margin
                bottom = ph if r + ph == h else ph - margin
                right = pw if c + pw == w else pw - margin
                out[..., r + top : r + bottom, c + left : c + right] = t[
                    ..., top:bottom, left:right
                ]
        return out
