"""The one training loop for every model: resumable, logged, with progress and backtracking.

- Data: random ``crop x crop`` crops of a training set, random flips and 90-degree rotations,
  and a fresh degradation for every batch. Batch ``t`` depends only on ``(seed, t)``, so a
  resumed run sees exactly the batches an uninterrupted run would.
- Loss: mean squared error; for patch models (``model.sums``), each pixel is weighted by its
  number of patch estimates (paper section 3.6 (ii)); ``loss: l1`` gives the MAE (DCSC).
- Optimizer: Adam, learning rate ``lr * decay ** (step // decay_every)``.
- Backtracking (paper appendix B): every ``check_every`` steps the loss on a fixed batch is
  measured; when it exceeds ``backtrack_tol`` times the best so far, the last good snapshot is
  restored and the learning rate multiplied by ``backtrack_factor``.
- Resumable: ``<out>/resume.pt`` holds everything needed to continue (written every
  ``save_every`` steps, every minute and at a Ctrl-C, which stops the run after the current
  step); a killed run restarts from it, and a finished run deletes it. All files load with
  ``torch.load(..., weights_only=True)``; a damaged one gets a one-line error.
- Outputs: ``<out>/model.pt`` (weights + config + budget), ``<out>/log.csv`` (the curve),
  ``<out>/train.json`` (budget: steps, wall time, hardware).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from groupsc.checkpoint import load_checkpoint, require_keys
from groupsc.data import load_dataset
from groupsc.degradations import jpeg
from groupsc.models import count_parameters


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint)."""

    dataset: str = "BSD400"
    mode: str = "gray"  # image loading mode, see groupsc.data
    task: str = "gray_denoise"
    levels: list[float] = field(default_factory=lambda: [25.0])  # sigma(s) or JPEG qualities
    crop: int = 56
    batch: int = 8
    lr: float = 6e-4
    decay: float = 0.35
    decay_every: int = 400
    max_steps: int = 1000
    max_minutes: float = 60.0
    loss: str = "l2"
    check_every: int = 50
    backtrack_tol: float = 1.5
    backtrack_factor: float = 0.8
    save_every: int = 50
    seed: int = 0
    threads: int = 2


def _augment(img: np.ndarray, rng: np.random.Generator, crop: int) -> np.ndarray:
    h, w = img.shape[:2]
    i, j = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    c = img[i : i + crop, j : j + crop]
    c = np.rot90(c, k=int(rng.integers(4)), axes=(0, 1))
    if rng.random() < 0.5:
        c = c[:, ::-1]
    return np.ascontiguousarray(c)


def make_batch(
    images: list[np.ndarray], cfg: TrainConfig, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step``: ``(clean, degraded)``, each ``(B, C, crop, crop)``, from (seed, step)."""
    rng = np.random.default_rng([cfg.seed, step + 1])  # step -1 is the fixed check batch
    clean, obs = [], []
    for _ in range(cfg.batch):
        img = images[int(rng.integers(len(images)))]
        c = _augment(img, rng, cfg.crop).astype(np.float32)
        level = float(cfg.levels[int(rng.integers(len(cfg.levels)))])
        if cfg.task == "jpeg":
            o = jpeg(c, int(level))
        else:
            o = c + rng.standard_normal(c.shape).astype(np.float32) * (level / 255.0)
        clean.append(c)
        obs.append(o)

    def to_t(a: list[np.ndarray]) -> torch.Tensor:
        t = torch.from_numpy(np.stack(a))
        return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)

    return to_t(clean), to_t(obs)


def loss_fn(model: nn.Module, clean: torch.Tensor, obs: torch.Tensor, kind: str) -> torch.Tensor:
    """The training loss; patch models weight each pixel by its number of patch estimates."""
    if hasattr(model, "sums"):
        num, den = model.sums(obs)
        est, weight = num / den, den
    else:
        est, weight = model(obs), torch.ones_like(obs)
    err = (est - clean).abs() if kind == "l1" else (est - clean) ** 2
    return (weight * err).sum() / weight.sum()


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _cpu(state: dict) -> dict:
    """A state dict with every tensor on the CPU (checkpoints load anywhere)."""
    return {k: v.detach().cpu() for k, v in state.items()}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the state was saved; the message says how to resume."""


class _DeferredInterrupt:
    """Within ``with``, a first Ctrl-C only sets ``requested`` (the loop saves and stops after
    the current step); a second one raises ``KeyboardInterrupt`` at once."""

    def __init__(self) -> None:
        self.requested = False
        self._active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> _DeferredInterrupt:
        if self._active:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: saving after the current step (Ctrl-C again stops at once; the state "
            "saved last is then kept)",
            file=sys.stderr,
        )


def _fresh_state() -> dict:
    return {
        "step": 0,
        "elapsed": 0.0,
        "init_seconds": 0.0,
        "lr_scale": 1.0,
        "best": math.inf,
        "backtracks": 0,
    }


RESUME_FIX = "delete it to train this run from step 0 again"


def _load_resume(path: Path, cfg: TrainConfig, device: torch.device) -> dict:
    """The resume checkpoint at ``path``, checked against ``cfg`` (one-line errors)."""
    ck = load_checkpoint(path, RESUME_FIX, map_location=device)
    require_keys(ck, ("model", "opt", "state", "log", "good", "cfg"), path, RESUME_FIX)
    if ck["cfg"] != asdict(cfg):
        raise ValueError(
            f"{path} was written with another configuration; {RESUME_FIX}, or restore the "
            "settings it was written with"
        )
    return ck


def _save_resume(path: Path, ck: dict) -> None:
    """Write ``ck`` to ``path`` atomically (a kill during the write leaves the old file)."""
    tmp = path.with_suffix(".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    cfg: TrainConfig,
    out: str | Path,
    *,
    model_config: dict | None = None,
    init: Callable[[nn.Module], None] | None = None,
    progress: bool = True,
    budget_name: str = "",
    stop_after: int | None = None,
    device: str | torch.device = "cpu",
    save_seconds: float = 60.0,
) -> dict:
    """Train ``model`` under ``cfg``; resume from ``out/resume.pt`` if present. Returns the budget.

    ``init`` runs once on a fresh start (e.g. dictionary initialization) and its wall time is
    recorded separately from the training time. ``stop_after`` ends the loop after that many
    steps *without* finishing the run, as a kill would (for tests of resumption). ``device``:
    where to train (``"cuda"`` on a GPU machine); ``model.pt`` is always written on the CPU.
    The resume file is written every ``save_every`` steps, every ``save_seconds`` seconds and
    at a Ctrl-C (which then raises :class:`TrainingInterrupted` after the current step).
    """
    torch.set_num_threads(cfg.threads)
    device = torch.device(device)
    model.to(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "resume.pt"
    images = [img for _, img in load_dataset(cfg.dataset, cfg.mode)]
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = _fresh_state()
    log: list[dict] = []
    if last.exists():
        ck = _load_resume(last, cfg, device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state, log, good = ck["state"], ck["log"], ck["good"]
        print(f"resuming {out} at step {state['step']} ({state['elapsed'] / 60:.1f} min done)")
    else:
        if init is not None:
            t0 = time.time()
            init(model)
            state["init_seconds"] = time.time() - t0
        good = copy.deepcopy(model.state_dict())
        state["init"] = good if count_parameters(model) < 10**6 else {}
    check_clean, check_obs = (  # the fixed batch of backtracking
        t.to(device) for t in make_batch(images, cfg, step=-1)
    )

    def lr_at(step: int) -> float:
        return cfg.lr * state["lr_scale"] * cfg.decay ** (step // cfg.decay_every)

    def save() -> None:
        ck = {"model": model.state_dict(), "opt": opt.state_dict(), "state": state, "log": log}
        _save_resume(last, {**ck, "good": good, "cfg": asdict(cfg)})

    bar = tqdm(total=cfg.max_steps, initial=state["step"], desc=out.name, disable=not progress)
    t_start = time.time() - state["elapsed"]
    saved_at = time.time()
    steps_this_call = 0
    with _DeferredInterrupt() as interrupt:
        while state["step"] < cfg.max_steps and state["elapsed"] < cfg.max_minutes * 60:
            if stop_after is not None and steps_this_call >= stop_after:
                bar.close()
                save()
                return {}
            steps_this_call += 1
            step = state["step"]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            model.train()
            clean, obs = (t.to(device) for t in make_batch(images, cfg, step))
            loss = loss_fn(model, clean, obs, cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] = step + 1
            state["elapsed"] = time.time() - t_start
            entry = {
                "step": step + 1,
                "loss": loss.item(),
                "lr": lr_at(step),
                "minutes": state["elapsed"] / 60,
            }
            if (step + 1) % cfg.check_every == 0:
                model.eval()
                with torch.no_grad():
                    check = float(loss_fn(model, check_clean, check_obs, cfg.loss))
                entry["check_loss"] = check
                if not math.isfinite(check) or check > cfg.backtrack_tol * state["best"]:
                    model.load_state_dict(good)  # backtrack: last good snapshot, smaller steps
                    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
                    state["lr_scale"] *= cfg.backtrack_factor
                    state["backtracks"] += 1
                    entry["backtrack"] = 1
                else:
                    state["best"] = min(state["best"], check)
                    good = copy.deepcopy(model.state_dict())
            log.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{entry['loss']:.2e}", lr=f"{entry['lr']:.1e}")
            due = time.time() - saved_at >= save_seconds
            if state["step"] % cfg.save_every == 0 or due or interrupt.requested:
                save()
                saved_at = time.time()
            if interrupt.requested:
                bar.close()
                raise TrainingInterrupted(
                    f"interrupted at step {state['step']} of {cfg.max_steps}: the state is "
                    f"saved in {last}; run the same command to resume"
                )
    bar.close()
    budget = {
        "budget": budget_name,
        "steps": state["step"],
        "train_minutes": round(state["elapsed"] / 60, 2),
        "init_minutes": round(state["init_seconds"] / 60, 2),
        "backtracks": state["backtracks"],
        "batch": cfg.batch,
        "crop": cfg.crop,
        "hardware": _hardware(device),
        "threads": cfg.threads,
        "torch": str(torch.__version__),
    }
    _write_outputs(out, model, cfg, budget, log, state.get("init", {}), model_config or {})
    last.unlink(missing_ok=True)
    return budget


def _write_outputs(
    out: Path, model: nn.Module, cfg: TrainConfig, budget: dict, log: list, init: dict, config
) -> None:
    """``model.pt`` (weights, configs, budget, init weights of small models), ``log.csv``
    (the curve) and ``train.json`` (the budget) of a finished run."""
    torch.save(
        {
            "model": _cpu(model.state_dict()),
            "model_config": config,
            "train_config": asdict(cfg),
            "budget": budget,
            "init": _cpu(init),  # weights before training (small models only)
        },
        out / "model.pt",
    )
    with open(out / "log.csv", "w") as f:
        keys = ["step", "loss", "lr", "minutes", "check_loss", "backtrack"]
        f.write(",".join(keys) + "\n")
        for e in log:
            f.write(",".join("" if e.get(k) is None else f"{e[k]:.6g}" for k in keys) + "\n")
    (out / "train.json").write_text(json.dumps(budget, indent=1) + "\n")


def budget_label(budget: dict) -> str:
    """One line for the ``budget`` column: steps, wall time, hardware."""
    return (
        f"{budget['steps']} steps x batch {budget['batch']} of {budget['crop']}px, "
        f"{budget['train_minutes']:.0f} min train + {budget['init_minutes']:.0f} min init, "
        f"{budget['hardware']} ({budget['threads']} threads)"
    )
