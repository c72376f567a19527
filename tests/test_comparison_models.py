"""The comparison models of ``train.comparison``: sizes, one training step each, their methods,
and the multiply-adds per pixel against analytic counts and the papers."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from groupsc.fit import MODEL_KINDS, build_model, fit, load_params, run_config
from groupsc.methods import get_method, method_info, trained_run
from groupsc.models import DCSC, NSR, DnCNN, PANet, count_parameters
from groupsc.models.cost import flops_per_pixel
from groupsc.paths import DataMissingError, repo_root
from groupsc.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# Trainable parameters of the comparison runs as configured in params.yaml.
RUN_PARAMS = {
    "dncnn-s_gray_25": 556_096,  # DnCNN-S with BN (555,137 once folded, as released)
    "panet-s_gray_25": 637_324,  # PANet-S gray: the RGB 639,630 less 2,306 in head and tail
    "nsr_gray_25": 626_273 + 2_081,  # sparse- (nsr.py) + one weight-norm gain per stored channel
    "dcsc_jpeg": 93_697,  # paper Table 1: 0.94e5
}
# (method key, task, level) of each comparison run
RUN_METHODS = {
    "dncnn-s_gray_25": ("dncnn-s-trained", "gray_denoise", 25),
    "panet-s_gray_25": ("panet-s", "gray_denoise", 25),
    "nsr_gray_25": ("nsr", "gray_denoise", 25),
    "dcsc_jpeg": ("dcsc-trained", "jpeg", 30),
}


@pytest.fixture(scope="module")
def params() -> dict:
    return load_params()


def test_comparison_runs_are_found_and_build_at_their_sizes(params):
    assert set(params["train"]["comparison"]) == set(RUN_PARAMS)
    for name, expected in RUN_PARAMS.items():
        for budget in ("cpu", "paper"):
            run, settings = run_config(name, params, budget)
            assert settings.pop("budget_name") == budget
            cfg = TrainConfig(**settings)  # every key is a TrainConfig field
            assert cfg.crop == run[budget].get("crop", cfg.crop)  # the run's block wins
        assert run["kind"] in MODEL_KINDS
        assert count_parameters(build_model(run["kind"], dict(run["model"]))) == expected
        assert trained_run(*RUN_METHODS[name]) == name


def test_build_model_takes_plain_dicts():
    dcsc = build_model("dcsc", {"branch_maps": 8, "channels": 16, "steps": 2, "dilations": [1, 2]})
    assert isinstance(dcsc, DCSC) and dcsc.dilations == (1, 2)
    assert isinstance(build_model("dncnn", {"depth": 5, "batch_norm": False}), DnCNN)
    assert build_model("panet", {"channels": 1, "blocks": 2}).blocks == 2
    nsr = build_model("nsr", {"variant": "sparse+", "channels": 1})
    assert isinstance(nsr, NSR) and (nsr.groups, nsr.hidden) == (2, 64)
    assert build_model("nsr", {"features": 8, "blocks": 1}).hidden == 16
    with pytest.raises(KeyError, match="panet, nsr"):
        build_model("rnan", {})


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A repository root in ``tmp_path`` (the real params.yaml and data/, no checkpoints)."""
    for name in ("params.yaml", "data"):
        (tmp_path / name).symlink_to(repo_root() / name)
    monkeypatch.setenv("GROUPSC_ROOT", str(tmp_path))
    return tmp_path


def test_one_step_of_each_comparison_run_then_its_method(root, params, monkeypatch):
    """``groupsc.fit`` trains every comparison run (1 step, batch 1, small crops) and the method
    of each loads the checkpoint and restores an image of the same shape."""
    tiny = copy.deepcopy(params)
    for run in tiny["train"]["comparison"].values():
        run["paper"].update(batch=1, crop=24, check_every=1000, save_every=1000, threads=1)
    monkeypatch.setattr("groupsc.fit.load_params", lambda: tiny)
    y = np.random.default_rng(0).random((40, 44), dtype=np.float32)
    for name, (key, task, level) in RUN_METHODS.items():
        budget = fit(name, "paper", max_steps=1, out_root=root / "checkpoints", progress=False)
        assert budget["steps"] == 1 and (root / "checkpoints" / name / "model.pt").exists()
        out = get_method(key, task, level)(y)
        assert out.shape == y.shape and np.isfinite(out).all()


def test_missing_checkpoints_name_the_command(root):
    with pytest.raises(DataMissingError, match=r"dvc repro train_comparison@dncnn-s_gray_25"):
        get_method("dncnn-s-trained", "gray_denoise", 25)
    with pytest.raises(DataMissingError, match=r"dcsc_jpeg/model.pt is missing"):
        get_method("dcsc-trained", "jpeg", 40)  # one run for every quality
    with pytest.raises(DataMissingError, match=r"dvc repro train@sc_gray_25"):
        get_method("sc", "gray_denoise", 25)
    assert "jpeg" in method_info("dcsc-trained").tasks
    assert method_info("nsr").published_names == ("Sparse-",)


def _conv_macs(model: torch.nn.Module) -> int:
    """Multiply-adds per pixel of every (full-resolution, run-once) conv: weight sizes."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_flops_per_pixel_counts_multiply_adds():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    assert flops_per_pixel(conv, channels=2, size=16) == 2 * 3 * 9
    for bn in (True, False):  # DnCNN-S: 554,112 = 555,137 parameters - 1,025 biases
        assert flops_per_pixel(DnCNN(17, 1, batch_norm=bn).eval(), size=32) == 554_112
    dcsc = DCSC()  # S runs once per LISTA step
    expected = _conv_macs(dcsc) + (dcsc.steps - 1) * dcsc.s.weight.numel()
    assert flops_per_pixel(dcsc, size=32) == expected == 1_531_296


def test_flops_of_panet_grow_with_the_attention():
    net, size = PANet(channels=1, blocks=2).eval(), 32
    levels = sum(h * w for h, w in net.attention.level_sizes(size, size))
    embed, feats = 32, 64
    backbone = _conv_macs(net) - (2 * embed + feats) * feats  # less the 1x1 convs
    convs = embed * feats + (embed + feats) * feats * levels / size**2  # 1x1 query, key, value
    # the direct form (training): q @ k and a @ v on 3x3 regions, per query pixel
    net.attention.unfold_path = True
    direct = flops_per_pixel(net, size=size)
    assert math.isclose(direct, backbone + convs + levels * 9 * (embed + feats))
    assert flops_per_pixel(net, size=16) < 0.5 * direct
    # the shifted-sum form (no-grad default): pixel products on the zero-padded maps, by chunks
    # of `shifted_rows` query rows (each with 2 halo rows), 9x fewer multiply-adds
    net.attention.unfold_path = False
    rows = net.attention.shifted_rows
    assert size % rows == 0  # whole chunks only, for the count below
    padded = sum((h + 2) * (w + 2) for h, w in net.attention.level_sizes(size, size))
    chunks = size // rows
    shifted = chunks * (rows + 2) * ((size + 2) * padded * embed + size * levels * feats)
    assert math.isclose(flops_per_pixel(net, size=size), backbone + convs + shifted / size**2)
    assert flops_per_pixel(net, size=size) < 0.25 * direct


@pytest.mark.parametrize(
    "variant, docs", [("baseline", 0.590e6), ("sparse-", 0.295e6), ("sparse+", 0.590e6)]
)
def test_nsr_flops_match_its_docs(variant, docs):
    net = NSR.variant(variant).eval()
    flops = flops_per_pixel(net)
    # the mixed convs (nsr.py's count), plus the per-image selectors and kernel mixing
    assert net.macs_per_pixel() <= flops < 1.002 * net.macs_per_pixel()
    assert abs(flops - docs) < 0.005 * docs


def test_cost_table_lists_parameters_and_macs():
    from groupsc.models import DnCNN
    from groupsc.models.cost import cost_table

    table = cost_table({"DnCNN-S": DnCNN(batch_norm=False)}, size=16)
    row = table.iloc[0]
    assert row["method"] == "DnCNN-S" and row["params"] == 555_137
    assert row["MACs/pixel"] == 64 * 9 + 15 * 64 * 64 * 9 + 64 * 9  # 554,112
