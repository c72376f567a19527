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
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from groupsc.checkpoint import load_checkpoint, require_keys
from groupsc.data import load_dataset
from groupsc.models import count_parameters
from groupsc.physics import operator
from groupsc.runtime import set_threads


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
    adam_eps: float = 1e-8  # the authors' GroupSC script: 1e-3
    lr_scales: dict[str, float] = field(default_factory=dict)  # parameter name -> lr multiplier
    backtrack: str = "loss"  # "loss" (fixed batch, backtrack_tol) or "train_psnr" (the authors')
    backtrack_drop: float = 0.2  # dB of training-set PSNR that trigger a backtrack (train_psnr)
    check_images: int = 0  # train_psnr: the first N training images (0: all, as the authors)
    level_per: str = "crop"  # a level drawn per "crop", or per "batch" (blind models' bins)


def _augment(img: np.ndarray, rng: np.random.Generator, crop: int) -> np.ndarray:
    h, w = img.shape[:2]
    i, j = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    c = img[i : i + crop, j : j + crop]
    c = np.rot90(c, k=int(rng.integers(4)), axes=(0, 1))
    if rng.random() < 0.5:
        c = c[:, ::-1]
    return np.ascontiguousarray(c)


def _observe(c: np.ndarray, task: str, level: float, rng: np.random.Generator):
    """The training observation of a clean crop: the task's operator (the harness's, see
    :mod:`groupsc.physics`) with the batch's generator."""
    return operator(task, level).observe(c, rng)


def _degrade(c: np.ndarray, task: str, level: float, rng: np.random.Generator) -> np.ndarray:
    return _observe(c, task, level, rng).y


def _to_tensor(a: list[np.ndarray]) -> torch.Tensor:
    t = torch.from_numpy(np.stack(a))
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)


class Batch(NamedTuple):
    """A training batch: ``clean`` and ``obs`` ``(B, C, crop, crop)``, each crop's ``levels``
    ``(B,)``, and the operator's ``mask`` ``(B, C, crop, crop)`` where it has one (mosaics)."""

    clean: torch.Tensor
    obs: torch.Tensor
    levels: torch.Tensor
    mask: torch.Tensor | None = None

    def to(self, device) -> Batch:
        return Batch(*(None if t is None else t.to(device) for t in self))

    def share(self, rank: int, world: int) -> Batch:
        """This process's share of the batch (crops ``rank``, ``rank + world``, ...)."""
        return Batch(*(None if t is None else t[rank::world] for t in self))


def make_batch(images: list[np.ndarray], cfg: TrainConfig, step: int) -> Batch:
    """Batch ``step`` (:class:`Batch`), from (seed, step). A level is drawn per crop, or once
    per batch (``cfg.level_per``: a blind model's batch shares one threshold set)."""
    rng = np.random.default_rng([cfg.seed, step + 1])  # step -1 is the fixed check batch
    draw = lambda: float(cfg.levels[int(rng.integers(len(cfg.levels)))])  # noqa: E731
    shared = draw() if cfg.level_per == "batch" else None
    clean, obs, levels, masks = [], [], [], []
    for _ in range(cfg.batch):
        img = images[int(rng.integers(len(images)))]
        c = _augment(img, rng, cfg.crop).astype(np.float32)
        level = shared if shared is not None else draw()
        seen = _observe(c, cfg.task, level, rng)
        clean.append(c)
        obs.append(seen.y)
        levels.append(level)
        masks.append(seen.mask)
    mask = None if masks[0] is None else _to_tensor(masks)
    return Batch(_to_tensor(clean), _to_tensor(obs), torch.tensor(levels), mask)


class _Estimate(nn.Module):
    """``model``'s estimate and per-pixel loss weight for a batch: ``(est, weight)``.

    Patch models (``model.sums``) weight each pixel by its number of patch estimates (paper
    section 3.6 (ii)); other models by 1. A module, so that DistributedDataParallel can wrap it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        obs: torch.Tensor,
        levels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self.model, "sums"):
            num, den = self.model.sums(obs, mask, sigma=_batch_sigma(self.model, levels))
            return num / den, den
        return self.model(obs), torch.ones_like(obs)


def _batch_sigma(model: nn.Module, levels: torch.Tensor | None) -> float | None:
    """The noise level a blind model is told in training: its batch's (one per batch)."""
    if getattr(model, "noise_bins", None) is None or levels is None:
        return None
    if not bool((levels == levels[0]).all()):
        raise ValueError("a blind model trains on batches of one level: set level_per: batch")
    return float(levels[0])


LOSSES = ("l2", "l1", "sum_l2")


def batch_loss(est: torch.Tensor, weight: torch.Tensor, clean: torch.Tensor, kind: str):
    """The loss of a batch from :class:`_Estimate`'s output.

    ``l2`` / ``l1``: the squared / absolute error averaged with the weights,
    ``sum(w e) / sum(w)``. ``sum_l2``: the authors' GroupSC script,
    ``sum(((w / max w) (est - clean))^2) / B`` (a sum over pixels, not a mean: with Adam's
    ``eps = 1e-3`` the scale of the gradients matters).
    """
    if kind == "sum_l2":
        scaled = (weight / weight.amax()) * (est - clean)
        return scaled.square().sum() / est.shape[0]
    err = (est - clean).abs() if kind == "l1" else (est - clean) ** 2
    return (weight * err).sum() / weight.sum()


def loss_fn(
    model: nn.Module,
    clean: torch.Tensor,
    obs: torch.Tensor,
    levels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    kind: str = "l2",
) -> torch.Tensor:
    """The training loss of ``model`` on one batch (see :func:`batch_loss`)."""
    est, weight = _Estimate(model)(obs, levels, mask)
    return batch_loss(est, weight, clean, kind)


def training_psnr(
    model: nn.Module, images: list[np.ndarray], cfg: TrainConfig, device, dist_ctx=None
) -> float:
    """Mean PSNR (dB, estimates clipped to [0, 1]) of ``model`` on the training images, each
    degraded at the first level with noise seeded by ``(seed, index)`` (the same every check):
    the authors' backtracking criterion. ``cfg.check_images`` > 0 uses the first ones only.
    Under DistributedDataParallel each process restores its share and the sums are reduced."""
    subset = images[: cfg.check_images] if cfg.check_images > 0 else images
    rank, world = (dist_ctx.rank, dist_ctx.world) if dist_ctx else (0, 1)
    total = torch.zeros(2, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for i in range(rank, len(subset), world):
            rng = np.random.default_rng([cfg.seed, 10**6 + i])
            c = subset[i].astype(np.float32)
            level = float(cfg.levels[0])
            seen = _observe(c, cfg.task, level, rng)
            kwargs = {}
            if seen.mask is not None:  # a mosaic: the model is told where the samples are
                kwargs["mask"] = _to_tensor([seen.mask]).to(device)
            sigma = _batch_sigma(model, torch.tensor([level]))
            if sigma is not None:
                kwargs["sigma"] = sigma
            est = model(_to_tensor([seen.y]).to(device), **kwargs).clamp(0, 1)
            est = est.cpu().double()
            mse = (est - _to_tensor([c]).double()).square().mean()
            total += torch.tensor([float(-10 * torch.log10(mse)), 1.0], dtype=torch.float64)
    if dist_ctx:
        dist_ctx.all_reduce(total)
    return float(total[0] / total[1])


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam (``eps = cfg.adam_eps``) with one parameter group per ``cfg.lr_scales`` entry
    (parameters named so get ``lr x scale``) and one for the rest."""
    unknown = set(cfg.lr_scales) - {name for name, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"lr_scales names unknown parameters {sorted(unknown)}")
    groups = [
        {"params": [p for n, p in model.named_parameters() if n not in cfg.lr_scales]},
        *(
            {"params": [p], "lr_scale": cfg.lr_scales[n]}
            for n, p in model.named_parameters()
            if n in cfg.lr_scales
        ),
    ]
    return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.adam_eps)


def _hardware(device: torch.device, dist_ctx=None) -> str:
    if device.type == "cuda":
        name = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        name = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{dist_ctx.world} x {name} (DDP)" if dist_ctx else name


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


# Settings that only say when to stop: a run resumed with other values continues to them (an
# interrupted run given a longer budget goes on; its steps so far are those it would have taken).
STOPPING = ("max_steps", "max_minutes")


def _load_resume(path: Path, cfg: TrainConfig, device: torch.device) -> dict:
    """The resume checkpoint at ``path``, checked against ``cfg`` (one-line errors): every
    setting but those of ``STOPPING`` must be the one the file was written with."""
    ck = load_checkpoint(path, RESUME_FIX, map_location=device)
    require_keys(ck, ("model", "opt", "state", "log", "good", "cfg"), path, RESUME_FIX)
    # a setting added since the file was written counts as its default
    written = {**asdict(TrainConfig()), **ck["cfg"], **{k: getattr(cfg, k) for k in STOPPING}}
    if written != asdict(cfg):
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


@dataclass
class DistContext:
    """This process's place under ``torchrun`` (DistributedDataParallel): rank and world size.

    Every process builds the same global batch (:func:`make_batch`) and trains on its share
    (``batch / world`` crops, rank ``r`` taking crops ``r, r + world, ...``); DDP averages the
    gradients, so the update is the one-process update on the whole batch up to float rounding.
    Only rank 0 writes files.
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: torch.device) -> DistContext | None:
        """The context of a ``torchrun`` process (``WORLD_SIZE`` > 1), else None. Initializes
        the process group: NCCL on GPUs, gloo on CPUs."""
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def all_reduce(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(t)

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        self.all_reduce(t)
        return float(t[0]) / self.world


def _device(device: str | torch.device) -> torch.device:
    """``device``, with ``cuda`` meaning this process's GPU under ``torchrun`` (LOCAL_RANK)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


MAX_BACKTRACKS = 20  # train_psnr backtracks in a row before a run gives up


class _Run:
    """One training run's state and its named steps: ``start`` (fresh or resumed), ``step``,
    ``check`` (backtracking), ``save`` (the resume file), ``finish`` (the outputs)."""

    def __init__(self, model, cfg, out, device, dist_ctx, model_config, budget_name) -> None:
        self.model, self.cfg, self.out, self.device = model, cfg, Path(out), device
        self.dist, self.model_config, self.budget_name = dist_ctx, model_config, budget_name
        self.settings: dict = {}  # what else the run was resolved from (train(settings=...))
        self.rank0 = dist_ctx is None or dist_ctx.rank == 0
        self.last = self.out / "resume.pt"
        self.images = [img for _, img in load_dataset(cfg.dataset, cfg.mode)]
        torch.manual_seed(cfg.seed)
        self.opt = make_optimizer(model, cfg)
        self.state, self.log, self.good = _fresh_state(), [], {}
        self.net: nn.Module = _Estimate(model)
        if dist_ctx is not None:
            if cfg.batch % dist_ctx.world:
                world = dist_ctx.world
                raise ValueError(f"batch {cfg.batch} does not split over {world} processes")
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids)

    # -- start ------------------------------------------------------------------------------
    def start(self, init) -> None:
        if self.last.exists():
            ck = _load_resume(self.last, self.cfg, self.device)
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["opt"])
            self.state, self.log, self.good = ck["state"], ck["log"], ck["good"]
            if self.rank0:
                done = self.state["elapsed"] / 60
                print(f"resuming {self.out} at step {self.state['step']} ({done:.1f} min done)")
        else:
            if init is not None:
                t0 = time.time()
                init(self.model)
                self.state["init_seconds"] = time.time() - t0
            self.good = self._snapshot()
            small = count_parameters(self.model) < 10**6
            self.state["init"] = copy.deepcopy(self.model.state_dict()) if small else {}
        if self.cfg.backtrack == "loss":
            self.check_batch = make_batch(self.images, self.cfg, -1).to(self.device)

    def _snapshot(self) -> dict:
        """What a backtrack returns to: the weights (and, for train_psnr, the optimizer and
        the step, as the authors reload their last checkpoint)."""
        weights = copy.deepcopy(self.model.state_dict())
        if self.cfg.backtrack == "loss":
            return weights
        opt = copy.deepcopy(self.opt.state_dict())
        return {"model": weights, "opt": opt, "step": self.state["step"]}

    # -- one step ---------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        return cfg.lr * self.state["lr_scale"] * cfg.decay ** (step // cfg.decay_every)

    def step(self, t_start: float) -> dict:
        step = self.state["step"]
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step) * g.get("lr_scale", 1.0)
        self.model.train()
        batch = make_batch(self.images, self.cfg, step)
        if self.dist is not None:  # this process's share of the global batch
            batch = batch.share(self.dist.rank, self.dist.world)
        batch = batch.to(self.device)
        est = self.net(batch.obs, batch.levels, batch.mask)
        loss = batch_loss(*est, batch.clean, self.cfg.loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        value = loss.item() if self.dist is None else self.dist.mean(loss.item())
        self.state["step"] = step + 1
        self.state["elapsed"] = time.time() - t_start
        minutes = self.state["elapsed"] / 60
        return {"step": step + 1, "loss": value, "lr": self.lr_at(step), "minutes": minutes}

    # -- backtracking -----------------------------------------------------------------------
    def check(self, entry: dict) -> None:
        """Every ``check_every`` steps: keep a snapshot, or go back to the last one."""
        if self.state["step"] % self.cfg.check_every:
            return
        if self.cfg.backtrack == "loss":
            self._check_loss(entry)
        else:
            self._check_psnr(entry)

    def _check_loss(self, entry: dict) -> None:
        """Loss on a fixed batch above ``backtrack_tol`` x the best: last snapshot, lr x
        ``backtrack_factor``."""
        cfg, state = self.cfg, self.state
        self.model.eval()
        with torch.no_grad():
            check = float(loss_fn(self.model, *self.check_batch, kind=cfg.loss))
        if self.dist is not None:
            check = self.dist.mean(check)
        entry["check_loss"] = check
        if not math.isfinite(check) or check > cfg.backtrack_tol * state["best"]:
            self.model.load_state_dict(self.good)
            self.opt = make_optimizer(self.model, cfg)
            state["lr_scale"] *= cfg.backtrack_factor
            state["backtracks"] += 1
            entry["backtrack"] = 1
        else:
            state["best"] = min(state["best"], check)
            self.good = self._snapshot()

    def _check_psnr(self, entry: dict) -> None:
        """The authors': training-set PSNR more than ``backtrack_drop`` dB below the last kept
        one: reload the last snapshot (weights, optimizer, step) and multiply the lr by
        ``backtrack_factor ** (k + 1)``, ``k`` the backtracks in a row; else keep a snapshot.

        One departure: the authors' first reference is 22 dB, so a model below 21.8 dB at its
        first check backtracks forever; here the first check sets the reference. After
        :data:`MAX_BACKTRACKS` in a row (lr x 0.8^210) the run stops with an error."""
        cfg, state = self.cfg, self.state
        psnr = training_psnr(self.model, self.images, cfg, self.device, self.dist)
        entry["check_psnr"] = psnr
        ref = state.get("ref_psnr", psnr if math.isfinite(psnr) else -math.inf)
        if not math.isfinite(psnr) or ref - psnr > cfg.backtrack_drop:
            if state.get("in_a_row", 0) >= MAX_BACKTRACKS:
                raise RuntimeError(
                    f"{MAX_BACKTRACKS} backtracks in a row at step {self.good['step']}: the "
                    f"training diverges (training-set PSNR {psnr:.2f} dB against {ref:.2f}); "
                    "lower lr in params.yaml"
                )
            self.model.load_state_dict(self.good["model"])
            self.opt.load_state_dict(self.good["opt"])
            state["lr_scale"] *= cfg.backtrack_factor ** (state.get("in_a_row", 0) + 1)
            state["in_a_row"] = state.get("in_a_row", 0) + 1
            state["step"] = self.good["step"]
            state["backtracks"] += 1
            entry["backtrack"] = 1
        else:
            state["in_a_row"], state["ref_psnr"] = 0, psnr
            self.good = self._snapshot()

    # -- files ------------------------------------------------------------------------------
    def save(self) -> None:
        if not self.rank0:
            return
        ck = {"model": self.model.state_dict(), "opt": self.opt.state_dict()}
        ck.update(state=self.state, log=self.log, good=self.good, cfg=asdict(self.cfg))
        _save_resume(self.last, ck)

    def finish(self) -> dict:
        state, cfg = self.state, self.cfg
        budget = {
            "budget": self.budget_name,
            "steps": state["step"],
            "train_minutes": round(state["elapsed"] / 60, 2),
            "init_minutes": round(state["init_seconds"] / 60, 2),
            "backtracks": state["backtracks"],
            "batch": cfg.batch,
            "crop": cfg.crop,
            "hardware": _hardware(self.device, self.dist),
            "threads": cfg.threads,
            "torch": str(torch.__version__),
        }
        if self.rank0:
            init = state.get("init", {})
            _write_outputs(self.out, self.model, cfg, budget, self.log, init, self.model_config)
            options = {"model": self.model_config, "train": asdict(cfg), **self.settings}
            record = {**budget, "settings": options}
            (self.out / "train.json").write_text(json.dumps(record, indent=1) + "\n")
            self.last.unlink(missing_ok=True)
        return budget


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
    settings: dict | None = None,
) -> dict:
    """Train ``model`` under ``cfg``; resume from ``out/resume.pt`` if present. Returns the budget.

    ``init`` runs once on a fresh start (e.g. dictionary initialization) and its wall time is
    recorded separately from the training time. ``stop_after`` ends the loop after that many
    steps *without* finishing the run, as a kill would (for tests of resumption). ``device``:
    where to train (``"cuda"`` on a GPU machine); ``model.pt`` is always written on the CPU.
    The resume file is written every ``save_every`` steps, every ``save_seconds`` seconds and
    at a Ctrl-C (which then raises :class:`TrainingInterrupted` after the current step).
    A finished run writes ``model.pt``, ``log.csv`` and ``train.json``: the budget and, under
    ``settings``, the resolved options the run trained with (KAIR's options file: ``model``,
    ``train`` = every :class:`TrainConfig` field, and the caller's ``settings``, e.g. ``fit``'s
    run name and initialization).
    Under ``torchrun`` the processes share each batch (:class:`DistContext`).
    """
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; use one of {LOSSES}")
    if cfg.backtrack not in ("loss", "train_psnr"):
        raise ValueError(f"unknown backtrack {cfg.backtrack!r}; use loss or train_psnr")
    if cfg.level_per not in ("crop", "batch"):
        raise ValueError(f"unknown level_per {cfg.level_per!r}; use crop or batch")
    set_threads(cfg.threads)
    device = _device(device)
    dist_ctx = DistContext.from_env(device)
    model.to(device)
    Path(out).mkdir(parents=True, exist_ok=True)
    run = _Run(model, cfg, out, device, dist_ctx, model_config or {}, budget_name)
    run.settings = dict(settings or {})
    run.start(init)
    state = run.state
    bar = tqdm(
        total=cfg.max_steps, initial=state["step"], desc=run.out.name,
        disable=not progress or not run.rank0,
    )  # fmt: skip
    t_start = time.time() - state["elapsed"]
    saved_at, steps_this_call = time.time(), 0
    with _DeferredInterrupt() as interrupt:
        while run.state["step"] < cfg.max_steps and run.state["elapsed"] < cfg.max_minutes * 60:
            if stop_after is not None and steps_this_call >= stop_after:
                bar.close()
                run.save()
                return {}
            steps_this_call += 1
            entry = run.step(t_start)
            run.check(entry)
            run.log.append(entry)
            bar.n = run.state["step"]
            bar.set_postfix(loss=f"{entry['loss']:.2e}", lr=f"{entry['lr']:.1e}")
            due = time.time() - saved_at >= save_seconds
            if run.state["step"] % cfg.save_every == 0 or due or interrupt.requested:
                run.save()
                saved_at = time.time()
            if interrupt.requested:
                bar.close()
                raise TrainingInterrupted(
                    f"interrupted at step {run.state['step']} of {cfg.max_steps}: the state is "
                    f"saved in {run.last}; run the same command to resume"
                )
    bar.close()
    return run.finish()


def _write_outputs(
    out: Path, model: nn.Module, cfg: TrainConfig, budget: dict, log: list, init: dict, config
) -> None:
    """``model.pt`` (weights, configs, budget, init weights of small models) and ``log.csv``
    (the curve) of a finished run."""
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
        if any("check_psnr" in e for e in log):  # the authors' backtracking criterion
            keys.insert(5, "check_psnr")
        f.write(",".join(keys) + "\n")
        for e in log:
            f.write(",".join("" if e.get(k) is None else f"{e[k]:.6g}" for k in keys) + "\n")


def budget_label(budget: dict) -> str:
    """One line for the ``budget`` column: steps, wall time, hardware."""
    return (
        f"{budget['steps']} steps x batch {budget['batch']} of {budget['crop']}px, "
        f"{budget['train_minutes']:.0f} min train + {budget['init_minutes']:.0f} min init, "
        f"{budget['hardware']} ({budget['threads']} threads)"
    )
