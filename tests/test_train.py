"""The training loop: resumable to the bit, logged, with backtracking."""

import json
from dataclasses import replace

import pytest
import torch

from groupsc.models.sparse import SparseCoding
from groupsc.train import TrainConfig, make_batch, train


def _tiny():
    torch.manual_seed(0)
    return SparseCoding(patch=5, atoms=16, steps=2)


def test_batches_depend_only_on_seed_and_step(have_data):
    from groupsc.data import load_dataset

    imgs = [i for _, i in load_dataset("BSD400", "gray", limit=4)]
    cfg = TrainConfig(batch=3, crop=24)
    a = make_batch(imgs, cfg, 5)[:2]
    b = make_batch(imgs, cfg, 5)[:2]
    c = make_batch(imgs, cfg, 6)[:2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].shape == (3, 1, 24, 24)


def test_resume_gives_the_same_weights(tmp_path, have_data):
    cfg = TrainConfig(batch=2, crop=24, max_steps=4, check_every=2, save_every=1, decay_every=2)
    straight = _tiny()
    train(straight, cfg, tmp_path / "a", progress=False)
    # an interrupted run: killed after 2 steps, then resumed to the end
    part = _tiny()
    assert train(part, cfg, tmp_path / "b", progress=False, stop_after=2) == {}
    assert (tmp_path / "b" / "resume.pt").exists() and not (tmp_path / "b" / "model.pt").exists()
    resumed = _tiny()
    budget = train(resumed, cfg, tmp_path / "b", progress=False)
    assert budget["steps"] == 4
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    final = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert final["budget"]["steps"] == 4
    assert (tmp_path / "b" / "log.csv").read_text().count("\n") == 5
    assert not (tmp_path / "b" / "resume.pt").exists()  # a finished run leaves no resume file


def test_an_interrupted_run_continues_to_a_longer_budget(tmp_path, have_data):
    """Stopped at step 2 of 4 and resumed with max_steps 6: the same weights as a straight
    6-step run; another setting changed is refused."""
    cfg = TrainConfig(batch=2, crop=24, max_steps=4, check_every=2, save_every=1, decay_every=2)
    longer = replace(cfg, max_steps=6)
    straight = _tiny()
    train(straight, longer, tmp_path / "a", progress=False)
    assert train(_tiny(), cfg, tmp_path / "b", progress=False, stop_after=2) == {}
    with pytest.raises(ValueError, match="written with another configuration"):
        train(_tiny(), replace(longer, lr=1.0), tmp_path / "b", progress=False)
    resumed = _tiny()
    assert train(resumed, longer, tmp_path / "b", progress=False)["steps"] == 6
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_backtracking_restores_and_lowers_the_rate(tmp_path, have_data):
    # a huge learning rate makes the check loss explode: the run must back off
    from groupsc.models import DnCNN

    torch.manual_seed(0)
    cfg = TrainConfig(batch=2, crop=24, max_steps=6, check_every=1, lr=10.0, save_every=10)
    budget = train(DnCNN(3, 1, features=8, batch_norm=False), cfg, tmp_path, progress=False)
    assert budget["backtracks"] >= 1
    log = (tmp_path / "log.csv").read_text().splitlines()
    lrs = [float(r.split(",")[2]) for r in log[1:]]
    assert min(lrs) < 10.0
    assert "backtrack" in log[0] and any(r.endswith(",1") for r in log[1:])


def _finetunes_initialized(section: str):
    """(name, run, merged settings, parent model, fresh model after its one-time
    initialization) for every run of ``train.<section>``."""
    from groupsc.fit import _initializer, build_model, load_params, run_config, run_init, run_model
    from groupsc.methods import load_trained

    params = load_params()
    runs = params["train"][section]
    assert runs
    for name in runs:
        run, settings = run_config(name, params)
        preset = settings.pop("budget_name")
        model = build_model(run["kind"], run_model(run, preset, params["train"]["presets"]))
        init = run_init(run, preset, params["train"]["presets"])
        _initializer(run, init, TrainConfig(**settings))(model)
        yield name, run, settings, load_trained(run["init"]["from_run"]), model


def test_finetune_runs_start_from_their_parent_run(have_data):
    """train.finetunes runs are found by name and start from their from_run checkpoint, with
    the kappa / threshold-scale / gamma overrides of params.yaml applied, and the thresholds
    resampled where the run has fewer unrolled steps than its parent; a parent whose forward
    used max(lam, 0) hands over its thresholds clamped at 0 to a model that uses them signed,
    so that the child starts from the function the parent computed; a blind child (one set
    of thresholds per noise bin) starts from its non-blind parent's thresholds scaled by
    bin / sigma_parent."""
    from groupsc.fit import per_bin, resample_steps

    for _, run, _, parent, model in _finetunes_initialized("finetunes"):
        init = run["init"]
        assert torch.equal(model.D, parent.D) and torch.equal(model.W, parent.W)
        lam = parent.lam if model.steps == parent.steps else resample_steps(parent.lam, model.steps)
        if model.signed_thresholds and not parent.signed_thresholds:
            assert (lam < 0).any() or run["init"]["from_run"] != "sc_gray_25"  # it matters
            lam = lam.clamp_min(0)
        if getattr(model, "noise_bins", None) and lam.dim() == 2:
            lam = per_bin(lam, {"train_config": parent.train_config}, model.noise_bins)
            assert lam.shape[0] == len(model.noise_bins)
            assert lam[0].abs().sum() < lam[-1].abs().sum()  # higher bins threshold more
        assert torch.allclose(model.lam, lam * init.get("lam_scale", 1.0))
        if "kappa" in init:
            assert torch.all(model.kappa == init["kappa"])
        elif run["kind"] != "sc" and parent.prox != "soft":  # kept from a non-local parent
            assert torch.equal(model.kappa, parent.kappa)
        if run["kind"] == "csr":
            assert torch.all(model.gamma == init["gamma"])


def test_a_model_block_named_after_the_budget_overrides_the_model(have_data):
    """SC keeps max(lam, 0) under the cpu budget (its checkpoints were trained with it) and is
    the authors' SC, lam as it is, under the paper budget."""
    from groupsc.fit import load_params, run_model

    params = load_params()
    presets = params["train"]["presets"]
    run = params["train"]["runs"]["sc_gray_25"]
    cpu, paper = run_model(run, "cpu", presets), run_model(run, "paper", presets)
    assert cpu["signed_thresholds"] is False and "signed_thresholds" not in paper
    assert "cpu" not in cpu and cpu["patch"] == paper["patch"] == 9


def test_resample_steps_keeps_the_ends_and_samples_evenly():
    from groupsc.fit import resample_steps

    lam = torch.arange(24.0)[:, None].repeat(1, 3)
    out = resample_steps(lam, 12)
    assert out[:, 0].tolist() == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23]
    assert torch.equal(resample_steps(lam, 24), lam)


def test_comparison_finetunes_start_from_their_parent_weights(have_data):
    """train.comparison_finetunes runs (DnCNN-S / NSR at other sigmas) train at their own level
    and start from every weight of their trained parent (same architecture)."""
    for name, _, settings, parent, model in _finetunes_initialized("comparison_finetunes"):
        assert settings["levels"] == [int(name.rsplit("_", 1)[1])]
        state, parent_state = model.state_dict(), parent.state_dict()
        assert state.keys() == parent_state.keys()
        assert all(torch.equal(state[k], parent_state[k]) for k in state)


def test_the_paper_budget_is_the_authors_script(have_data):
    """400 batches of 32 crops an epoch: lr x0.35 every 80 epochs, 300 epochs, a PSNR check on
    the training images every 10 epochs; Adam's eps 1e-3; the sparse models start from the
    dictionary with thresholds 0.02 (kappa 1 and nu 1 are the models' own first values)."""
    from groupsc.fit import all_runs, load_params, run_config, run_init

    params = load_params()
    presets = params["train"]["presets"]
    for name, run in all_runs(params).items():
        _, s = run_config(name, params, "paper")
        if run["kind"] in ("sc", "csr", "groupsc"):
            assert (s["batch"], s["crop"], s["lr"], s["decay"]) == (32, 56, 6e-4, 0.35)
            assert (s["decay_every"], s["max_steps"], s["check_every"]) == (
                80 * 400,
                300 * 400,
                10 * 400,
            )
            assert (s["adam_eps"], s["loss"], s["backtrack"]) == (1e-3, "sum_l2", "train_psnr")
            assert (s["backtrack_drop"], s["backtrack_factor"]) == (0.2, 0.8)
            init = run_init(run, "paper", presets)
            assert "from_run" not in init and init["lam"] == 0.02
        else:  # the comparison models keep their own papers' optimizers
            assert s["adam_eps"] == 1e-8 and s["backtrack"] == "loss"


def test_the_paper_budget_runs_a_few_steps_on_cpu(tmp_path, have_data):
    """Two steps of the paper's protocol (batch 32, dictionary init) for SC; a GroupSC step of
    batch 32 takes about 10 GB here, the test of that model's paper settings is above."""
    from groupsc.fit import fit

    budget = fit("sc_gray_25", "paper", max_steps=2, out_root=tmp_path, progress=False)
    assert budget["steps"] == 2 and budget["budget"] == "paper" and budget["batch"] == 32
    ck = torch.load(tmp_path / "sc_gray_25" / "model.pt", weights_only=True)
    assert ck["train_config"]["adam_eps"] == 1e-3 and ck["train_config"]["loss"] == "sum_l2"
    assert ck["model_config"]["signed_thresholds"] is True  # the forward is recorded
    init = ck["init"]
    assert torch.all(init["lam"] == 0.02)
    assert not torch.equal(ck["model"]["D"], init["D"])
    # the resolved options beside the checkpoint (KAIR's options file): what params.yaml and
    # the preset resolved to, enough to read the run without params.yaml
    record = json.loads((tmp_path / "sc_gray_25" / "train.json").read_text())
    options = record["settings"]
    assert record["steps"] == 2 and options["run"] == "sc_gray_25" and options["kind"] == "sc"
    assert options["train"] == ck["train_config"] and options["model"] == ck["model_config"]
    assert options["init"]["lam"] == 0.02 and options["train"]["max_steps"] == 2


def test_the_authors_loss_sums_squared_errors_weighted_by_patch_counts():
    from groupsc.train import _Estimate, batch_loss

    model = _tiny()
    clean, obs = torch.rand(2, 1, 12, 12), torch.rand(2, 1, 12, 12)
    est, weight = _Estimate(model)(obs)
    mask = weight / weight.max()
    ref = (mask * (est - clean)).square().sum() / 2
    torch.testing.assert_close(batch_loss(est, weight, clean, "sum_l2"), ref)
    assert weight[0, 0, 0, 0] == 1 and weight.max() == 25  # corner: one patch; inside: p^2


def test_the_authors_backtracking_reloads_and_lowers_the_rate(tmp_path, have_data, monkeypatch):
    """A training-set PSNR more than 0.2 dB below the last kept one reloads the last snapshot
    (weights, optimizer, step) and multiplies the lr by 0.8^(k+1) for the k-th backtrack in a
    row (the PSNR sequence is scripted; the first check sets the reference)."""
    import groupsc.train as T

    script = iter([25.0, 24.7, 24.75, 25.1, 25.2, 25.3])  # keep, back, back, keep, keep, keep
    monkeypatch.setattr(T, "training_psnr", lambda *a, **k: next(script))
    cfg = TrainConfig(
        dataset="Set12", batch=2, crop=24, max_steps=4, check_every=1, lr=1e-3,
        save_every=10, backtrack="train_psnr", decay_every=100,
    )  # fmt: skip
    budget = train(_tiny(), cfg, tmp_path, progress=False)
    log = (tmp_path / "log.csv").read_text().splitlines()
    head = log[0].split(",")
    rows = [dict(zip(head, r.split(","), strict=True)) for r in log[1:]]
    assert budget["backtracks"] == 2 and budget["steps"] == 4
    assert [int(r["step"]) for r in rows] == [1, 2, 2, 2, 3, 4]  # back to step 1 twice
    assert [r["backtrack"] for r in rows] == ["", "1", "1", "", "", ""]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[:2] == [pytest.approx(1e-3)] * 2
    assert lrs[2] == pytest.approx(1e-3 * 0.8)  # first backtrack: x0.8
    assert lrs[3] == pytest.approx(1e-3 * 0.8 * 0.8**2)  # second in a row: x0.8^2 more
    assert lrs[4] == pytest.approx(lrs[3])  # kept: the rate stays
    # the steps replayed after a backtrack start from the kept weights: same batch, same loss
    # up to the optimizer's reloaded moments and the lower rate
    assert rows[2]["loss"] == rows[1]["loss"] == rows[3]["loss"]


def test_the_authors_backtracking_gives_up_on_a_diverging_run(tmp_path, have_data, monkeypatch):
    import groupsc.train as T

    psnr = iter([25.0] + [20.0] * 100)
    monkeypatch.setattr(T, "training_psnr", lambda *a, **k: next(psnr))
    cfg = TrainConfig(
        dataset="Set12", batch=2, crop=24, max_steps=50, check_every=1, save_every=100,
        backtrack="train_psnr",
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="20 backtracks in a row at step 1"):
        train(_tiny(), cfg, tmp_path, progress=False)
