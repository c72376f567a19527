"""Train one run of ``params.yaml`` (a section of ``train.*``: see ``RUN_STAGES``) under a
budget preset.

    python -m groupsc.fit sc_gray_25            # preset from train.budget (cpu by default)
    python -m groupsc.fit sc_gray_25 --budget paper --max-steps 5   # smoke test of the paper one
    python -m groupsc.fit dncnn-s_gray_25 --budget paper --device cuda  # on a GPU

Writes ``checkpoints/<name>/{model.pt, log.csv, train.json}``. While it runs, a resume file
``checkpoints/<name>/resume.pt`` (not a DVC output; commit it to carry an unfinished run into
another session) is refreshed; a killed run continues from it, and a finished run deletes it,
so ``dvc repro --force`` trains from scratch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from groupsc.checkpoint import load_checkpoint
from groupsc.cli import positive_int
from groupsc.paths import DataMissingError, repo_root
from groupsc.train import TrainingInterrupted

MODEL_KINDS = ("sc", "csr", "groupsc", "dncnn", "dcsc", "panet", "nsr")
SPARSE_KINDS = ("sc", "csr", "groupsc")  # SparseCoding models; see model_record
# the sections of train.* holding runs, and the dvc.yaml stage that trains each one's runs
RUN_STAGES = {
    "runs": "train",
    "finetunes": "finetune",
    "comparison": "train_comparison",
    "comparison_finetunes": "finetune_comparison",
}


def load_params() -> dict:
    """``params.yaml`` of the repository."""
    return yaml.safe_load((repo_root() / "params.yaml").read_text())


def build_model(kind: str, config: dict) -> torch.nn.Module:
    """A fresh model of ``kind`` with keyword arguments ``config``.

    For ``nsr``, ``config`` may name a ``variant`` of the paper's tables (``baseline``,
    ``sparse-``, ``sparse+``; the other keys go to :meth:`NSR.variant`) instead of the sizes.
    """
    from groupsc.models import DCSC, NSR, DnCNN, PANet
    from groupsc.models.sparse import SparseCoding

    if kind in ("sc", "csr", "groupsc"):
        prox = {"sc": "soft", "csr": "csr", "groupsc": "group"}[kind]
        return SparseCoding(prox=prox, **config)
    if kind == "dncnn":
        return DnCNN(**config)
    if kind == "dcsc":
        return DCSC(**config)
    if kind == "panet":
        return PANet(**config)
    if kind == "nsr":
        config = dict(config)
        variant = config.pop("variant", None)
        return NSR.variant(variant, **config) if variant else NSR(**config)
    raise KeyError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")


def all_runs(params: dict) -> dict[str, dict]:
    """Every run of ``params.yaml``'s ``train.*`` sections, by name."""
    train = params["train"]
    return {k: v for s in RUN_STAGES for k, v in (train.get(s) or {}).items()}


def finetuned_runs(params: dict) -> dict[str, dict]:
    """The runs that start from another run's weights (``init.from_run``), by name."""
    return {k: v for k, v in all_runs(params).items() if "from_run" in (v.get("init") or {})}


def run_config(name: str, params: dict, budget: str | None = None) -> tuple[dict, dict]:
    """(run entry, merged training settings) of run ``name`` under ``budget``.

    Runs live in ``train.runs`` (trained from a dictionary), ``train.finetunes`` (started from
    another run's weights, ``init.from_run``; their DVC stage depends on that checkpoint),
    ``train.comparison`` (the comparison models of issue 4; the ``train_comparison`` stage) or
    ``train.comparison_finetunes`` (those started from a trained comparison model).
    Settings merge, later winning: the preset, the run's ``train``, the run's block named after
    the preset (``paper:`` holds that paper's own batch / crop / schedule, ``cpu:`` the cuts).
    A mistyped key, run name or level raises a one-line ``ValueError`` naming its place in
    ``params.yaml`` (:func:`check_run`).
    """
    runs = all_runs(params)
    if name not in runs:
        raise KeyError(f"unknown run {name!r}; runs in params.yaml: {', '.join(runs)}")
    run = runs[name]
    preset = budget or params["train"]["budget"]
    presets = params["train"]["presets"]
    if preset not in presets:
        raise KeyError(f"unknown budget {preset!r}; presets: {', '.join(presets)}")
    check_run(name, run, runs, presets)
    settings = {**presets[preset], **run.get("train", {}), **run.get(preset, {})}
    settings["budget_name"] = preset
    return run, settings


def run_init(run: dict, preset: str, presets: dict) -> dict | None:
    """The ``init`` block of ``run`` under ``preset``: its block named after the preset if it
    has one (e.g. ``init.paper``: the paper's models start from the dictionary), else the
    rest of ``init``."""
    init = run.get("init")
    if not init:
        return None
    if preset in init:
        return init[preset]
    return {k: v for k, v in init.items() if k not in presets}


def run_model(run: dict, preset: str, presets: dict) -> dict:
    """The ``model`` settings of ``run`` under ``preset``: its block named after the preset
    (e.g. ``model.cpu: {signed_thresholds: false}``) over the rest of ``model``."""
    model = dict(run.get("model") or {})
    own = model.get(preset) or {}
    return {**{k: v for k, v in model.items() if k not in presets}, **own}


RUN_KEYS = ("kind", "model", "init", "train")
INIT_KEYS = ("from_run", "kappa", "lam_scale", "gamma", "patches", "alpha", "epochs", "lam")


def check_run(name: str, run: dict, runs: dict, presets: dict) -> None:
    """Refuse a run of ``params.yaml`` with an unknown key, setting, ``from_run`` or level."""
    from dataclasses import fields

    from groupsc.degradations import validate_level
    from groupsc.train import TrainConfig

    where = f"params.yaml run {name!r}"
    known = set(RUN_KEYS) | set(presets)
    _refuse_unknown(run, known, where)
    if run.get("kind") not in MODEL_KINDS:
        raise ValueError(
            f"{where}: kind {run.get('kind')!r} is not one of {', '.join(MODEL_KINDS)}"
        )
    settings = {f.name for f in fields(TrainConfig)}
    for block in ("train", *presets):
        _refuse_unknown(run.get(block) or {}, settings, f"{where}, {block}")
    for preset, values in presets.items():
        _refuse_unknown(values, settings, f"params.yaml train.presets.{preset}")
    for preset in set(run.get("model") or {}) & set(presets):
        if not isinstance(run["model"][preset], dict):
            raise ValueError(f"{where}, model.{preset}: expected a block of model settings")
    init = run.get("init") or {}
    _refuse_unknown(init, set(INIT_KEYS) | set(presets), f"{where}, init")
    for preset in set(init) & set(presets):
        _refuse_unknown(init[preset], set(INIT_KEYS), f"{where}, init.{preset}")
    parent = init.get("from_run")
    if parent is not None and parent not in runs:
        raise ValueError(
            f"{where}: init.from_run {parent!r} is not a run of params.yaml; "
            f"runs: {', '.join(runs)}"
        )
    train = run.get("train") or {}
    for level in train.get("levels", []):
        try:
            validate_level(train.get("task", TrainConfig.task), level)
        except ValueError as err:
            raise ValueError(f"{where}, train.levels: {err}") from None


def _refuse_unknown(block: dict, known: set, where: str) -> None:
    unknown = sorted(set(block) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(known))}"
        )


def fit(
    name: str,
    budget: str | None = None,
    max_steps: int | None = None,
    out_root: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
    start: dict | None = None,
) -> dict:
    """Train run ``name``; returns the recorded budget.

    The model's random initial weights are drawn after ``torch.manual_seed(seed)`` (the run's
    seed), so a run trained from scratch starts the same way each time. ``start``: weights to
    begin from instead of the run's initialization (``init`` of params.yaml), e.g. the
    ``init`` weights a committed ``model.pt`` records (:mod:`groupsc.spotcheck`).
    """
    from groupsc.train import TrainConfig, train

    params = load_params()
    run, settings = run_config(name, params, budget)
    preset = settings.pop("budget_name")
    init_cfg = run_init(run, preset, params["train"]["presets"])
    if max_steps is not None:
        settings["max_steps"] = max_steps
    cfg = TrainConfig(**settings)
    model_cfg = run_model(run, preset, params["train"]["presets"])
    torch.manual_seed(cfg.seed)
    try:
        model = build_model(run["kind"], model_cfg)
    except TypeError as err:  # a mistyped model key
        raise ValueError(f"params.yaml run {name!r}, model: {err}") from None
    out = Path(out_root or repo_root() / "checkpoints") / name
    if start is not None:
        init = lambda m: m.load_state_dict(start)  # noqa: E731
    else:
        init = _initializer(run, init_cfg, cfg) if init_cfg else None
    return train(
        model,
        cfg,
        out,
        model_config=model_record(run["kind"], model_cfg, model),
        init=init,
        progress=progress,
        budget_name=preset,
        device=device,
        settings={
            "run": name,
            "kind": run["kind"],
            "init": (init_cfg or {}) if start is None else {"start": "weights given to fit"},
        },
    )


def model_record(kind: str, config: dict, model: torch.nn.Module) -> dict:
    """The ``model_config`` a checkpoint stores: kind, settings and, for the sparse models,
    every forward option spelled out (a checkpoint without them is read as the legacy forward,
    :data:`groupsc.models.sparse.LEGACY_FORWARD`)."""
    extra = model.forward_options() if kind in SPARSE_KINDS else {}
    return {"kind": kind, **extra, **config}


def resample_steps(lam: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-step thresholds ``(..., K, atoms)`` of a trained model for a model with ``steps``
    steps.

    Step ``j`` takes the parent's step ``round(j (K - 1) / (steps - 1))``: the first and the
    last thresholds are kept and the schedule in between is sampled evenly (24 -> 12 steps:
    0, 2, ..., 10, 13, ..., 21, 23).
    """
    idx = torch.linspace(0, lam.shape[-2] - 1, steps).round().long()
    return lam[..., idx, :].clone()


def per_bin(lam: torch.Tensor, ck: dict, bins: tuple[float, ...]) -> torch.Tensor:
    """A non-blind parent's thresholds ``(K, atoms)`` for each noise bin of a blind model,
    scaled by ``bin / sigma_parent`` (soft-threshold denoisers' thresholds grow about
    linearly with the noise): ``(bins, K, atoms)``."""
    sigma = float(ck["train_config"]["levels"][0])
    scale = torch.tensor(bins, dtype=lam.dtype) / sigma
    return scale[:, None, None] * lam[None]


def _clamps_thresholds(ck: dict) -> bool:
    """Whether a sparse checkpoint's forward used ``max(lam, 0)`` (the legacy rule; a
    checkpoint without forward options is legacy) rather than signed thresholds."""
    cfg = ck.get("model_config", {})
    return cfg.get("kind") in SPARSE_KINDS and not cfg.get("signed_thresholds", False)


def _initializer(run: dict, init_cfg: dict, cfg):
    """The one-time initialization of a fresh run (dictionary learning, or a trained run)."""

    def init(model: torch.nn.Module) -> None:
        if "from_run" in init_cfg:  # e.g. GroupSC starting from the trained SC weights
            parent = init_cfg["from_run"]
            path = repo_root() / "checkpoints" / parent / "model.pt"
            ck = load_checkpoint(
                path,
                f"train {parent} first (`python -m groupsc.fit {parent}`), or restore it with "
                f"`git checkout -- checkpoints/{parent}/model.pt`",
            )
            state = ck["model"]
            if "lam" in state and state["lam"].shape[-2] != model.steps:
                state = {**state, "lam": resample_steps(state["lam"], model.steps)}
                print(
                    f"thresholds resampled from {ck['model']['lam'].shape[-2]} to "
                    f"{model.steps} unrolled steps"
                )
            if getattr(model, "noise_bins", None) and state["lam"].dim() == 2:
                state = {**state, "lam": per_bin(state["lam"], ck, model.noise_bins)}
                print(f"thresholds scaled to the noise bins {model.noise_bins}")
            missing = model.load_state_dict(state, strict=False)
            with torch.no_grad():  # start the non-local model near the one it comes from
                if _clamps_thresholds(ck) and getattr(model, "signed_thresholds", False):
                    # the parent used max(lam, 0): start from the function it computed
                    model.lam.clamp_(min=0)
                    print(f"{parent}'s thresholds clamped at 0, as its forward used them")
                if "kappa" in init_cfg:
                    model.kappa.fill_(init_cfg["kappa"])
                if "lam_scale" in init_cfg:
                    model.lam.mul_(init_cfg["lam_scale"])
                if "gamma" in init_cfg:  # CSR's weight of |u - beta| (0: exactly SC)
                    model.gamma.fill_(init_cfg["gamma"])
            print(f"initialized from {init_cfg['from_run']} (new: {missing.missing_keys})")
            return
        from groupsc.dictionary import learn_dictionary, sample_patches

        samples = sample_patches(
            cfg.dataset, model.patch, init_cfg["patches"], mode=cfg.mode, seed=cfg.seed
        )
        dictionary = learn_dictionary(
            samples, model.atoms, alpha=init_cfg["alpha"], epochs=init_cfg["epochs"], seed=cfg.seed
        )
        model.set_dictionary(dictionary, lam=init_cfg["lam"])

    return init


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", help=f"a run name of params.yaml (train.{{{', '.join(RUN_STAGES)}}})")
    p.add_argument("--budget", default=None, help="preset name (default: train.budget)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="override, for smoke tests")
    p.add_argument("--out-root", default=None, help="default: checkpoints/")
    p.add_argument("--device", default="cpu", help="cpu or cuda (a GPU machine)")
    args = p.parse_args(argv)
    try:
        budget = fit(args.run, args.budget, args.max_steps, args.out_root, device=args.device)
    except (DataMissingError, KeyError, ValueError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        print(err, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        resume = Path(args.out_root or repo_root() / "checkpoints") / args.run / "resume.pt"
        where = f"the state saved last is in {resume}" if resume.exists() else "nothing was saved"
        print(f"\ninterrupted: {where}; run the same command to continue", file=sys.stderr)
        return 130
    print(budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
