"""PANet: Mei, Fan, Zhang, Yu, Zhou, Liu, Fu, Huang & Shi, "Pyramid Attention Networks for
Image Restoration", ECCV 2020.

Structure (paper section 3.5, Fig. 3; implementation details section 4.2):

- head conv 3x3 (``channels -> 64``);
- body: ``blocks`` EDSR residual blocks (conv3x3, PReLU, conv3x3, identity skip; no BN), ONE
  pyramid attention after block ``blocks // 2`` (the 40th of 80), then a conv 3x3;
- global pathway from the first feature to the last (``body(f) + f``), tail conv 3x3 to
  ``channels``. The output is the restored image itself: the paper describes only the feature
  pathway, and the authors' restoration code (``DN_RGB``/``Demosaic`` ``model/edsr.py``,
  ``panet.py``; the CAR model ships only as ``.pyc``) returns ``tail(body(f) + f)`` with no skip
  from the input image (its mean shift is commented out). ``image_residual=True`` adds the input
  (``y + tail(...)``) as an option.
- pyramid attention (eqs. 4-5): levels ``F_s = bicubic(x, floor(s H) x floor(s W))`` for
  ``s in {1.0, 0.9, 0.8, 0.7, 0.6}``; query ``f``, key ``g`` (1x1 conv 64 -> 32 + PReLU) and value
  ``theta`` (1x1 conv 64 -> 64 + PReLU); 3x3 region-to-region matching ``<f(x)_{3x3 at i},
  g(z)_{3x3 at j} / ||g(z)_{3x3 at j}||>``; ONE softmax over all positions of all levels (with
  the authors' scale 10); the output pastes the weighted 3x3 value patches back (a transposed
  convolution, here ``F.fold``) and adds the input (residual).

Reference settings and parameter counts (paper Table 4; "K" = thousands):

==========  ======  ========  =========  =======  ==========  =================  ============
model       blocks  features  PA after   embed    scales      ours (RGB)         paper
==========  ======  ========  =========  =======  ==========  =================  ============
PANet       80      64        block 40   32       1.0 .. 0.6  5,957,334          5957K
PANet-S     8       64        block 4    32       1.0 .. 0.6  639,630            665K (!)
PANet gray  80      64        block 40   32       1.0 .. 0.6  5,955,028          (CAR, n/a)
==========  ======  ========  =========  =======  ==========  =================  ============

Breakdown (RGB): residual block ``2 x (64*64*9 + 64) + 1`` (one PReLU slope) = 73,857; head
1,792; conv closing the body 36,928; tail 1,731; pyramid attention 8,323 (query and key
``64*32 + 32 + 1`` each, value ``64*64 + 64 + 1``). The 5957K of Table 4 is reproduced to the
thousand. PANet-S ("only 8 residual blocks", section 4.6) gives 639,630, 25.4K (3.8%) below the
paper's 665K; no integer block count at 64 features gives 665K (8 -> 640K, 9 -> 713K), so the
table's figure is not consistent with the stated configuration and we keep the stated one.

Memory: the attention matrix is ``N x HW x L`` floats with ``L = sum_s floor(sH) floor(sW)``
(about 3.3 HW): 66 MiB per image at 48x48 (the training patch), 3.3 GiB at 128x128, 53 GiB at
256x256, plus as much again for the softmax and its backward. The authors evaluate with EDSR's
``--chop`` (quadrants with a 10-pixel overlap, split until a piece has < 6800 pixels, about
82x82, so about 0.55 GiB per piece); :meth:`PANet.forward_chop` does the same. Within one call
``PyramidAttention.query_chunk`` bounds the no-grad peak to ``query_chunk x L`` (exact: the
softmax is per query).

Speed (evaluation): the direct path multiplies ``HW x C'r^2`` queries by ``C'r^2 x L`` keys
and ``HW x L`` weights by ``L x Cr^2`` values, about 110 GFLOP per 57 x 77 chop piece. Without
gradients the forward instead takes an exact shifted-sum path (:meth:`PyramidAttention.
_forward_shifted`): pixel-to-pixel products (``r^2 = 9`` times fewer FLOPs) plus box sums along
the diagonals of the 4-D score tensor, in cache-sized chunks of query rows. Measured here (1
thread, beside another job): 4 chop pieces 11.6 s -> 4.0 s; a 256 x 256 Set12 image through
``forward_chop`` 130 s -> 39 s, PSNR within 4e-5 dB of the direct path (float32 rounding; float64
agrees to 1e-14).

Attention maps for visualization (paper Fig. 8): ``forward(..., return_attention=True)`` or
``PyramidAttention.keep_attention = True`` (then ``.last_attention``) give one tensor per scale
of shape ``(N, H, W, h_s, w_s)``: for each query pixel, its softmax weights over the level's
``h_s x w_s`` positions. Summed over all levels and positions they are 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

PANET_SCALES = (1.0, 0.9, 0.8, 0.7, 0.6)
PANET_VARIANTS: dict[str, dict[str, int]] = {"PANet": {"blocks": 80}, "PANet-S": {"blocks": 8}}


def _conv1x1_prelu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.PReLU())


class PyramidAttention(nn.Module):
    """Non-local attention from every pixel to the 3x3 regions of a bicubic feature pyramid.

    Args:
        channels: feature channels C (input = output).
        reduction: embedding width ``C // reduction`` for query and key (paper: 64 -> 32).
        scales: pyramid levels (1.0 first for the plain non-local term).
        patch: matching / pasting window r (paper: 3).
        softmax_scale: logits multiplier before the softmax (authors' code: 10).
        paste_scale: factor on the pasted sum of overlapping patches. Each output pixel receives
            ``patch**2`` overlapping patches in the interior; the authors' code divides by 4,
            which we keep so that their trained weights would behave the same (training absorbs
            the constant either way).
        query_chunk: if set, the unfold path processes queries in chunks of this many pixels
            (lower peak memory; ignored when attention maps are requested).
    Without gradients (evaluation) and without attention maps, the forward takes the exact
    shifted-sum path (:meth:`_forward_shifted`, 3x faster on CPU, ``shifted_rows`` image rows of
    queries at a time); ``unfold_path = True`` forces the direct unfold-and-matmul path, which
    training and attention maps always use.
    Input/output: ``(N, C, H, W)`` features; ``y = paste_scale * fold(A theta) + x``.
    """

    def __init__(
        self,
        channels: int = 64,
        reduction: int = 2,
        scales: Sequence[float] = PANET_SCALES,
        patch: int = 3,
        softmax_scale: float = 10.0,
        paste_scale: float = 0.25,
        query_chunk: int | None = None,
    ) -> None:
        super().__init__()
        if patch % 2 != 1:
            raise ValueError(f"patch must be odd, got {patch}")
        embed = channels // reduction
        self.query = _conv1x1_prelu(channels, embed)  # f (authors: conv_match_L_base)
        self.key = _conv1x1_prelu(channels, embed)  # g (authors: conv_match)
        self.value = _conv1x1_prelu(channels, channels)  # theta (authors: conv_assembly)
        self.channels, self.scales, self.patch = channels, tuple(scales), patch
        self.softmax_scale, self.paste_scale = softmax_scale, paste_scale
        self.query_chunk = query_chunk
        self.shifted_rows = 8
        self.unfold_path = False
        self.keep_attention = False
        self.last_attention: list[torch.Tensor] | None = None

    def level_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """``(floor(s h), floor(s w))`` of each level (at least 1 pixel)."""
        return [(max(1, math.floor(h * s)), max(1, math.floor(w * s))) for s in self.scales]

    def _pyramid(self, x: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """The levels ``F_s``: ``x`` itself at scale 1.0, bicubic downscalings elsewhere."""
        return [
            x if s == 1.0 else F.interpolate(x, size=size, mode="bicubic", align_corners=False)
            for s, size in zip(self.scales, sizes, strict=True)
        ]

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"PyramidAttention expects (N, {self.channels}, H, W) input, got {tuple(x.shape)}"
            )
        want = return_attention or self.keep_attention
        if not (want or self.unfold_path or torch.is_grad_enabled()):
            return self._forward_shifted(x)
        n, _, h, w = x.shape
        pad = self.patch // 2
        sizes = self.level_sizes(h, w)
        keys, values = [], []
        for z in self._pyramid(x, sizes):
            keys.append(F.unfold(self.key(z), self.patch, padding=pad))  # (N, C'r^2, L_s)
            values.append(F.unfold(self.value(z), self.patch, padding=pad))  # (N, Cr^2, L_s)
        k = torch.cat(keys, dim=2)
        k = k / k.norm(dim=1, keepdim=True).clamp_min(1e-4)  # unit-norm key regions
        v = torch.cat(values, dim=2).transpose(1, 2)  # (N, L, C r^2)
        q = F.unfold(self.query(x), self.patch, padding=pad).transpose(1, 2)  # (N, HW, C' r^2)

        chunk = q.shape[1] if (want or not self.query_chunk) else self.query_chunk
        cols, maps = [], []
        for start in range(0, q.shape[1], chunk):
            a = torch.softmax(self.softmax_scale * (q[:, start : start + chunk] @ k), dim=-1)
            cols.append(a @ v)  # (N, chunk, C r^2)
            if want:
                maps.append(a)
        out = F.fold(torch.cat(cols, dim=1).transpose(1, 2), (h, w), self.patch, padding=pad)
        y = self.paste_scale * out + x
        if not want:
            return y
        a = torch.cat(maps, dim=1).view(n, h, w, -1)
        split = torch.split(a, [hs * ws for hs, ws in sizes], dim=-1)
        attention = [t.reshape(n, h, w, hs, ws) for t, (hs, ws) in zip(split, sizes, strict=True)]
        if self.keep_attention:
            self.last_attention = [t.detach() for t in attention]
        return (y, attention) if return_attention else y

    def _forward_shifted(self, x: torch.Tensor) -> torch.Tensor:
        """The same output as the unfold path, with about 9x fewer matmul FLOPs (no-grad only).

        Region matching is a sum over the window offsets ``e`` of pixel products,
        ``<f_{r x r at i}, g_{r x r at j}> = sum_e <f(i + e), g(j + e)>`` (zero outside the
        image), so one ``C'``-wide pixel-to-pixel product ``S0`` of the zero-padded maps and
        ``r^2`` shifted sums along its diagonals replace the ``C' r^2``-wide product. Pasting
        is the transpose: ``out(i') = sum_j (sum_e A(i' - e, j - e)) theta(j)``. Queries go in
        chunks of ``shifted_rows`` image rows (peak memory ``~ rows W L`` floats, cache-sized).
        """
        n, c, h, w = x.shape
        p, pad = self.patch, self.patch // 2
        sizes = self.level_sizes(h, w)
        qf = F.pad(self.query(x), (pad,) * 4)  # (N, C', H + 2 pad, W + 2 pad)
        keys, inv_norms, values = [], [], []
        for z, (hs, ws) in zip(self._pyramid(x, sizes), sizes, strict=True):
            k = self.key(z)
            sq = F.avg_pool2d(k.pow(2).sum(1, keepdim=True), p, 1, pad, count_include_pad=True)
            norm = (sq * p * p).sqrt().clamp_min(1e-4)  # |g| of each zero-padded r x r region
            inv_norms.append((self.softmax_scale / norm).view(n, 1, 1, hs, ws))
            keys.append(F.pad(k, (pad,) * 4).flatten(2))  # (N, C', (hs + 2 pad)(ws + 2 pad))
            values.append(self.value(z).flatten(2).transpose(1, 2))  # (N, hs ws, C)
        k_all = torch.cat(keys, dim=-1)
        length = sum(hs * ws for hs, ws in sizes)
        out = x.new_zeros(n, h + 2 * pad, w, c)  # output rows -pad .. h + pad - 1
        for r0 in range(0, h, self.shifted_rows):
            r = min(self.shifted_rows, h - r0)
            s0 = qf[:, :, r0 : r0 + r + 2 * pad].flatten(2).transpose(1, 2) @ k_all
            logits = x.new_empty(n, r * w, length)
            off_p = off = 0
            for (hs, ws), inv in zip(sizes, inv_norms, strict=True):
                lp = (hs + 2 * pad) * (ws + 2 * pad)
                blk = s0[..., off_p : off_p + lp].view(
                    n, r + 2 * pad, w + 2 * pad, hs + 2 * pad, -1
                )
                dst = logits[..., off : off + hs * ws].view(n, r, w, hs, ws)
                _diagonal_box_sum(blk, (r, w, hs, ws), p, out=dst).mul_(inv)
                off_p, off = off_p + lp, off + hs * ws
            a = torch.softmax(logits, dim=-1)
            off = 0
            for (hs, ws), v in zip(sizes, values, strict=True):
                al = a[..., off : off + hs * ws].view(n, r, w, hs, ws)
                al = F.pad(al, (pad, pad, pad, pad, pad, pad, 2 * pad, 2 * pad))
                b = _diagonal_box_sum(al, (r + 2 * pad, w, hs, ws), p)
                out[:, r0 : r0 + r + 2 * pad] += (b.view(n, -1, hs * ws) @ v).view(n, -1, w, c)
                off += hs * ws
        return self.paste_scale * out[:, pad : pad + h].permute(0, 3, 1, 2) + x


def _diagonal_box_sum(
    t: torch.Tensor, size: tuple[int, int, int, int], p: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``s[i, j, a, b] = sum_{u, v < p} t[i + u, j + v, a + u, b + v]`` for ``(N, I+p-1, J+p-1,
    A+p-1, B+p-1)`` input and ``size = (I, J, A, B)``: a box sum along the 4-D diagonals, done
    as two separable passes of ``p`` shifted views (columns, then rows)."""
    i, j, a, b = size
    cols = t[:, :, 0:j, :, 0:b].clone()
    for v in range(1, p):
        cols += t[:, :, v : v + j, :, v : v + b]
    if p == 1:
        return cols if out is None else out.copy_(cols)
    out = torch.add(cols[:, 0:i, :, 0:a], cols[:, 1 : 1 + i, :, 1 : 1 + a], out=out)
    for u in range(2, p):
        out += cols[:, u : u + i, :, u : u + a]
    return out


class ResBlock(nn.Module):
    """EDSR residual block without BN: ``x + conv(prelu(conv(x)))``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.PReLU(),
            nn.Conv2d(features, features, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def chop_forward(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    shave: int = 10,
    min_size: int = 6800,
) -> torch.Tensor:
    """Apply ``fn`` on four overlapping quadrants (recursively) and stitch, as EDSR's ``--chop``.

    Each quadrant is ``(H//2 + shave) x (W//2 + shave)``; quadrants with fewer than ``min_size``
    pixels go through ``fn`` together (one batch), larger ones are split again. ``fn`` must keep
    the spatial size. Images too small to split (``H//2 + shave > H``) go through ``fn`` whole.
    """
    n, _, h, w = x.shape
    hh, wh = h // 2, w // 2
    hs, ws = hh + shave, wh + shave
    if hs > h or ws > w:
        return fn(x)
    pieces = [
        x[..., r : r + hs, c : c + ws] for r in (0, h - hs) for c in (0, w - ws)
    ]  # top-left, top-right, bottom-left, bottom-right
    if hs * ws < min_size:
        outs = list(fn(torch.cat(pieces, dim=0)).split(n, dim=0))
    else:
        outs = [chop_forward(fn, p, shave, min_size) for p in pieces]
    out = x.new_empty(n, outs[0].shape[1], h, w)
    dr, dc = hs - (h - hh), ws - (w - wh)  # offsets of the kept halves in the far pieces
    out[..., :hh, :wh] = outs[0][..., :hh, :wh]
    out[..., :hh, wh:] = outs[1][..., :hh, dc:]
    out[..., hh:, :wh] = outs[2][..., dr:, :wh]
    out[..., hh:, wh:] = outs[3][..., dr:, dc:]
    return out


class PANet(nn.Module):
    """ResNet backbone with one pyramid attention in the middle (denoising, demosaicking, CAR).

    Args:
        channels: image channels (3 color denoising / demosaicking, 1 for Y-channel CAR).
        features: feature maps of the backbone (64).
        blocks: residual blocks (80 for PANet, 8 for PANet-S); the attention follows block
            ``blocks // 2``.
        reduction: query/key embedding width ``features // reduction`` (2 -> 32).
        scales: pyramid levels.
        image_residual: add the input image to the output (not in the authors' code; see the
            module docstring).
    Input/output: ``(N, channels, H, W)`` float in [0, 1] (any H, W >= 1); the output is not
    clamped (the authors quantize to [0, 1] only when saving).
    """

    def __init__(
        self,
        channels: int = 3,
        features: int = 64,
        blocks: int = 80,
        reduction: int = 2,
        scales: Sequence[float] = PANET_SCALES,
        image_residual: bool = False,
    ) -> None:
        super().__init__()
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        self.attention = PyramidAttention(features, reduction, scales)
        self.body = nn.Sequential(
            *(ResBlock(features) for _ in range(blocks // 2)),
            self.attention,
            *(ResBlock(features) for _ in range(blocks - blocks // 2)),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.tail = nn.Conv2d(features, channels, 3, padding=1)
        self.channels, self.features, self.blocks = channels, features, blocks
        self.image_residual = image_residual

    @classmethod
    def variant(cls, name: str, channels: int = 3) -> PANet:
        """``"PANet"`` (80 blocks) or ``"PANet-S"`` (8 blocks), 64 features."""
        if name not in PANET_VARIANTS:
            raise KeyError(f"unknown PANet variant {name!r}; known: {', '.join(PANET_VARIANTS)}")
        return cls(channels=channels, **PANET_VARIANTS[name])

    def forward(
        self, y: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Restore ``y``; with ``return_attention`` also the per-scale maps (module docstring)."""
        if y.ndim != 4 or y.shape[1] != self.channels:
            raise ValueError(
                f"PANet expects (N, {self.channels}, H, W) input, got {tuple(y.shape)}"
            )
        f = self.head(y)
        r, maps = f, None
        for layer in self.body:
            if layer is self.attention and return_attention:
                r, maps = layer(r, return_attention=True)
            else:
                r = layer(r)
        x = self.tail(r + f)
        if self.image_residual:
            x = x + y
        return (x, maps) if return_attention else x

    def forward_chop(self, y: torch.Tensor, shave: int = 10, min_size: int = 6800) -> torch.Tensor:
        """The authors' test-time evaluation: :func:`chop_forward` with their defaults."""
        return chop_forward(self, y, shave, min_size)
