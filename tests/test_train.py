"""The training loop: resumable to the bit, logged, with backtracking."""

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
    a = make_batch(imgs, cfg, 5)
    b = make_batch(imgs, cfg, 5)
    c = make_batch(imgs, cfg, 6)
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
    from groupsc.fit import _initializer, build_model, load_params, run_config
    from groupsc.methods import load_trained

    params = load_params()
    runs = params["train"][section]
    assert runs
    for name in runs:
        run, settings = run_config(name, params)
        settings.pop("budget_name")
        model = build_model(run["kind"], dict(run["model"]))
        _initializer(run, run["init"], TrainConfig(**settings))(model)
        yield name, run, settings, load_trained(run["init"]["from_run"]), model


def test_finetune_runs_start_from_their_parent_run(have_data):
    """train.finetunes runs are found by name and start from their from_run checkpoint, with
    the kappa / threshold-scale / gamma overrides of params.yaml applied, and the thresholds
    resampled where the run has fewer unrolled steps than its parent."""
    from groupsc.fit import resample_steps

    for _, run, _, parent, model in _finetunes_initialized("finetunes"):
        init = run["init"]
        assert torch.equal(model.D, parent.D) and torch.equal(model.W, parent.W)
        lam = parent.lam if model.steps == parent.steps else resample_steps(parent.lam, model.steps)
        assert torch.allclose(model.lam, lam * init.get("lam_scale", 1.0))
        if "kappa" in init:
            assert torch.all(model.kappa == init["kappa"])
        elif run["kind"] != "sc" and parent.prox != "soft":  # kept from a non-local parent
            assert torch.equal(model.kappa, parent.kappa)
        if run["kind"] == "csr":
            assert torch.all(model.gamma == init["gamma"])


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
