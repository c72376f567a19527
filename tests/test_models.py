"""Architectures: shapes and parameter counts against the papers and the released files."""

import pytest
import torch

from groupsc.models import DCSC, DnCNN, count_parameters


@pytest.mark.parametrize(
    "depth, channels, bn, expected",
    [
        (17, 1, True, 556_096),  # DnCNN-S, paper: "about 556k"
        (17, 1, False, 555_137),  # DnCNN-S with BN folded (released file)
        (20, 1, False, 665_921),  # DnCNN-B / DnCNN-3 released
        (20, 3, False, 668_227),  # CDnCNN-B released
    ],
)
def test_dncnn_parameter_counts(depth, channels, bn, expected):
    assert count_parameters(DnCNN(depth, channels, batch_norm=bn)) == expected


@pytest.mark.parametrize(
    "maps, channels, expected",
    [(32, 64, 93_697), (48, 128, 315_937)],  # paper 0.94e5; errata
)
def test_dcsc_parameter_counts(maps, channels, expected):
    assert count_parameters(DCSC(maps, channels)) == expected


def test_shapes_and_residual_form():
    x = torch.rand(2, 1, 20, 24)
    net = DnCNN(5, 1, batch_norm=False)
    torch.nn.init.zeros_(net.convs()[-1].weight)
    torch.nn.init.zeros_(net.convs()[-1].bias)
    assert torch.equal(net(x), x)  # zero residual -> identity
    dcsc = DCSC(8, 16, steps=3)
    out = dcsc(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    codes = dcsc.codes(x)
    assert len(codes) == 4 and codes[0].shape == (2, 16, 20, 24) and (codes[-1] >= 0).all()


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        DCSC(8, 16, steps=1)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        DnCNN(5, 3)(torch.rand(1, 1, 8, 8))
