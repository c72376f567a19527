"""NSR (Fan et al., NeurIPS 2020): sparse-group conv, variants, counts, shapes, gradients."""

import pytest
import torch
from torch.nn import functional as F

from groupsc.models import NSR, SparseConv2d, count_parameters
from groupsc.models.nsr import Block

pytestmark = pytest.mark.usefixtures("one_thread")


def _kernel(conv: SparseConv2d, choice: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain conv kernel/bias made of group ``choice[j]`` for each cardinal group j."""
    k, d, o = conv.groups, conv.cardinality, conv.out_channels // conv.cardinality
    w = conv.weight.view(k, d, o, *conv.weight.shape[1:])
    b = conv.bias.view(k, d, o)
    return (
        torch.cat([w[g, j] for j, g in enumerate(choice)]),
        torch.cat([b[g, j] for j, g in enumerate(choice)]),
    )


def test_one_hot_selection_is_a_plain_conv_with_that_groups_kernel():
    torch.manual_seed(0)
    conv = SparseConv2d(6, 8, groups=3, cardinality=2)
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        conv.select.weight.zero_()
        for choice in ([1, 1], [2, 0]):  # same group for both cardinals, then one each
            logits = torch.zeros(3, 2)
            logits[choice, [0, 1]] = 1e4  # softmax -> exactly one-hot in float32
            conv.select.bias.copy_(logits.flatten())
            assert torch.equal(conv.selection(x)[0], (logits > 0).float())
            w, b = _kernel(conv, choice)
            assert torch.allclose(conv(x), F.conv2d(x, w, b, padding=1), atol=1e-5)


def test_low_temperature_gives_the_argmax_group():
    torch.manual_seed(0)
    conv = SparseConv2d(4, 4, groups=2, cardinality=1, temperature=1e-6)
    x = torch.randn(1, 4, 7, 7)
    with torch.no_grad():
        logits = conv.select(x.mean(dim=(-2, -1))).view(2, 1)
    g = int(logits.argmax())
    w, b = _kernel(conv, [g])
    assert torch.allclose(conv(x), F.conv2d(x, w, b, padding=1), atol=1e-5)


def test_mixed_kernel_equals_mixing_the_group_outputs():
    # Eq. 10 (mix kernels, then convolve) = eq. 8 for one linear layer (convolve with every
    # group, then mix the outputs), per sample and per cardinal group.
    torch.manual_seed(0)
    conv = SparseConv2d(5, 6, groups=2, cardinality=3)
    x = torch.randn(3, 5, 8, 10)
    gamma = conv.selection(x)  # (N, k, d)
    assert torch.allclose(gamma.sum(dim=1), torch.ones(3, 3))
    full = F.conv2d(x, conv.weight, conv.bias, padding=1).view(3, 2, 3, 2, 8, 10)
    expected = (gamma[:, :, :, None, None, None] * full).sum(dim=1).reshape(3, 6, 8, 10)
    assert torch.allclose(conv(x), expected, atol=1e-5)
    # Batched = one sample at a time (per-sample kernels via a grouped conv).
    assert torch.allclose(conv(x), torch.cat([conv(xi) for xi in x.split(1)]), atol=1e-6)


def test_variants_and_parameter_counts():
    # The paper gives no parameter counts for these models, only "FLOPs (M)" in Tables 5/6
    # (multiply-accumulates per pixel: DnCNN 0.55 = 554,112) and the words "keeps the model
    # size" (sparse-) and "doubles model capacity" (sparse+). Exact counts pinned here.
    expected = {"baseline": 591_969, "sparse-": 626_273, "sparse+": 1_233_505}
    paper_flops = {"baseline": 0.59, "sparse-": 0.30, "sparse+": 0.60}
    kernels = {}
    for name, n in expected.items():
        net = NSR.variant(name)
        assert count_parameters(net) == n
        kernels[name] = sum(p.numel() for p in net.body.parameters() if p.ndim == 4)
        # Within the 0.01M resolution of the paper's table (sparse+ is 0.0096M under it).
        assert abs(net.macs_per_pixel() / 1e6 - paper_flops[name]) <= 0.01
    assert kernels["sparse-"] == kernels["baseline"] == 589_824
    assert kernels["sparse+"] == 2 * kernels["baseline"]
    assert NSR.variant("baseline").sparse_convs() == []
    assert len(NSR.variant("sparse+").sparse_convs()) == 32


def test_weight_norm_block_reproduces_the_authors_released_count():
    # ychfan/nsr README: "EDSR+NSR x2" (16 blocks, 64 features, width 1, 4 groups, cardinality
    # 16, weight norm, RGB, x2 pixel shuffle) has 4,877,812 parameters. Head conv 3->64 (WN)
    # 1,856, tail 64->12 (WN) 6,936 and 5x5 skip 3->12 (WN) 924 are outside this module.
    block = Block(64, 64, groups=4, cardinality=16, weight_norm=True)
    assert 16 * count_parameters(block) + 1_856 + 6_936 + 924 == 4_877_812


@pytest.mark.parametrize("name", ["baseline", "sparse-", "sparse+"])
def test_shapes_non_square_and_weight_norm(name):
    torch.manual_seed(0)
    net = NSR.variant(name, weight_norm=True)
    net.body = net.body[:2]  # two blocks are enough for shapes
    y = torch.rand(2, 1, 13, 22)
    assert net(y).shape == y.shape
    for conv in net.sparse_convs():
        assert conv.last_selection.shape == (2, conv.groups, conv.cardinality)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = NSR(features=16, blocks=2, width=2, groups=2, cardinality=4)
    net(torch.rand(2, 1, 10, 12)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_patchwise_inference_tiles_the_image():
    torch.manual_seed(0)
    net = NSR(features=8, blocks=1, width=1, groups=2, cardinality=4).eval()
    y = torch.rand(2, 1, 29, 40)
    with torch.no_grad():
        assert torch.equal(net.forward_patches(y, patch=64), net(y))  # one tile = whole image
        tiled = net.forward_patches(y, patch=16, margin=4, batch=5)
        # Row starts 0, 8, 13; column starts 0, 8, 16, 24. The tile at (8, 8) sees only its
        # own pixels and supplies rows 12..16 (rows 17.. come from the tile at row 13), cols 12..19.
        tile = net(y[..., 8:24, 8:24])
    assert tiled.shape == y.shape and torch.isfinite(tiled).all()
    assert torch.allclose(tiled[..., 12:17, 12:20], tile[..., 4:9, 4:12], atol=1e-6)


def test_invalid_configurations_and_inputs():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        NSR(features=8, blocks=1)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        SparseConv2d(4, 4, cardinality=2)(torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="divisible"):
        SparseConv2d(4, 6, cardinality=4)
    with pytest.raises(KeyError):
        NSR.variant("sparse")
