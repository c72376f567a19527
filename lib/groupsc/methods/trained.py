"""Models trained here: loaded from ``checkpoints/<run>/model.pt`` with their budget.

The paper's models (``sc``, ``csr``, ``groupsc``, ``groupsc-knn``, ``groupsc-knn12``; ``sc``,
``groupsc`` and ``groupsc-knn`` for every task of :data:`SPARSE_TASKS`) and the
comparison models of ``train.comparison`` (keys distinct from the released weights' ``dncnn-s``
/ ``dcsc-updated``):

===============  =================================  ==========================================
key              checkpoint (``params.yaml`` run)   inference
===============  =================================  ==========================================
dncnn-s-trained  ``dncnn-s_gray_<sigma>``           whole image
panet-s          ``panet-s_gray_<sigma>``           ``forward_chop`` (the authors' ``--chop``)
nsr              ``nsr_gray_<sigma>``               ``forward_patches``, the training crop
dcsc-trained     ``dcsc_jpeg`` (every quality)      whole image (Y channel)
===============  =================================  ==========================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from groupsc.methods.base import (
    DENOISE,
    BlindRestorer,
    Builder,
    MethodInfo,
    Restorer,
    TorchRestorer,
)

TASK_SHORT = {
    "gray_denoise": "gray",
    "color_denoise": "color",
    "jpeg": "jpeg",
    "demosaic": "mosaic",
    "blind_color_denoise": "cblind",
}


# The paper's sparse models run every task of the paper (a model per task and level:
# ``sc_color_25``, ``sc_jpeg_10``, ``sc_mosaic_0``); the variants stay gray.
SPARSE_TASKS = DENOISE + ("color_denoise", "jpeg", "demosaic")

# Tasks whose one model serves every level: a blind model (a threshold set per noise bin, the
# bin chosen from the level it estimates) is the run ``<prefix>_<task>``, e.g. ``sc_cblind``.
ONE_MODEL_TASKS = ("blind_color_denoise",)

# Method keys whose runs are not named ``<key>_<task>_<level>``.
RUN_PREFIX = {"dncnn-s-trained": "dncnn-s"}  # key -> run name prefix
ONE_RUN = {"dcsc-trained": "dcsc_jpeg"}  # key -> the one run for every level


def trained_run(kind: str, task: str, level: float) -> str:
    """The ``params.yaml`` run (and ``checkpoints/`` folder) of a trained model: ``sc_gray_25``.

    ``kind`` is the method key (``sc``, ``groupsc``, ``dncnn-s-trained``...): the run is
    ``<prefix>_<task>_<level>`` (prefix from ``RUN_PREFIX``, else the key), ``<prefix>_<task>``
    for a task of ``ONE_MODEL_TASKS`` (``sc_cblind``), or the key's single run in ``ONE_RUN``.
    The model kind itself is read from the checkpoint.
    """
    if kind in ONE_RUN:
        return ONE_RUN[kind]
    run = f"{RUN_PREFIX.get(kind, kind)}_{TASK_SHORT[task]}"
    return run if task in ONE_MODEL_TASKS else f"{run}_{float(level):g}"


def load_trained(run: str) -> torch.nn.Module:
    """A model trained here (``checkpoints/<run>/model.pt``), with ``budget``, ``n_params``,
    ``train_config`` (the run's :class:`groupsc.train.TrainConfig` as a dict) and
    ``weights_sha256`` (of the file) attached.

    A missing or damaged file raises a one-line error naming it and how to restore or retrain
    it (:mod:`groupsc.checkpoint`).
    """
    from groupsc.checkpoint import CheckpointError, read_checkpoint, require_keys
    from groupsc.fit import SPARSE_KINDS, build_model
    from groupsc.models import count_parameters
    from groupsc.models.sparse import LEGACY_FORWARD
    from groupsc.paths import repo_root
    from groupsc.train import budget_label

    path = repo_root() / "checkpoints" / run / "model.pt"

    def fix() -> str:  # built only on failure: it reads params.yaml
        return (
            f"restore it with `git checkout -- {path.relative_to(repo_root())}` "
            f"or retrain it with {_train_command(run)}"
        )

    ck, raw = read_checkpoint(path, fix)  # read once: loaded and hashed
    require_keys(ck, ("model", "model_config", "budget", "train_config"), path, fix)
    cfg = dict(ck["model_config"])
    if cfg.get("kind") in SPARSE_KINDS:  # written before the forward options existed: legacy
        cfg = {**LEGACY_FORWARD, **cfg}
    try:
        model = build_model(cfg.pop("kind"), cfg)
        model.load_state_dict(ck["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        reason = str(err).splitlines()[0]
        raise CheckpointError(f"{path} does not fit its model ({reason}); {fix()}") from None
    model.budget = f"{ck['budget'].get('budget', '')} budget: {budget_label(ck['budget'])}"
    model.n_params = str(count_parameters(model))
    model.train_config = ck["train_config"]
    model.weights_sha256 = hashlib.sha256(raw).hexdigest()
    return model.eval()


def _train_command(run: str) -> str:
    """How to train ``run``: its DVC stage if it has one, else ``groupsc.fit`` alone."""
    from groupsc.fit import RUN_STAGES, load_params

    train = load_params()["train"]
    for section, stage in RUN_STAGES.items():
        if run in (train.get(section) or {}):
            return f"`dvc repro {stage}@{run}` (or `python -m groupsc.fit {run}`)"
    return f"`python -m groupsc.fit {run}` ({run!r} is not a run of params.yaml's train.*)"


class Tiled(torch.nn.Module):
    """``model`` run through one of its tiled forward methods (``forward_chop``...)."""

    def __init__(self, model: torch.nn.Module, method: str, **kwargs) -> None:
        super().__init__()
        self.model, self.method, self.kwargs = model, method, kwargs

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(y, **self.kwargs)


def _panet_chop(model: torch.nn.Module) -> torch.nn.Module:
    # the full attention over a BSD68 image would need about 0.3 TB
    return Tiled(model, "forward_chop")


def _nsr_patches(model: torch.nn.Module) -> torch.nn.Module:
    # the selectors pool over a patch of the training size, as in training
    return Tiled(model, "forward_patches", patch=int(model.train_config["crop"]))


def _trained(
    kind: str, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None
) -> Builder:
    def build(task: str, level: float) -> Restorer:
        model = load_trained(trained_run(kind, task, level))
        blind = getattr(model, "noise_bins", None) is not None
        restorer = (BlindRestorer if blind else TorchRestorer)(wrap(model) if wrap else model)
        restorer.budget, restorer.params = model.budget, model.n_params
        restorer.weights_sha256 = model.weights_sha256
        return restorer

    return build


METHODS: dict[str, tuple[MethodInfo, Builder]] = {
    # SC also denoises color blindly (paper section 3.4): the one model ``sc_cblind``.
    "sc": (
        MethodInfo(
            "sc", "SC", "trained", (*SPARSE_TASKS, *ONE_MODEL_TASKS), published_names=("SC",)
        ),
        _trained("sc"),
    ),
    "csr": (
        MethodInfo("csr", "CSR", "trained", DENOISE, published_names=("CSR",)),
        _trained("csr"),
    ),
    "groupsc": (
        MethodInfo(
            "groupsc",
            "GroupSC",
            "trained",
            SPARSE_TASKS,
            published_names=("GroupSC",),
        ),
        _trained("groupsc"),
    ),
    # The fast variant (k nearest patches within a small radius, sparse products); compared
    # with the paper's (dense) GroupSC figures. It also denoises color blindly (groupsc-knn_cblind).
    "groupsc-knn": (
        MethodInfo(
            "groupsc-knn",
            "GroupSC (k-NN)",
            "trained",
            (*SPARSE_TASKS, *ONE_MODEL_TASKS),
            published_names=("GroupSC",),
        ),
        _trained("groupsc-knn"),
    ),
    # The same with K = 12 unrolled steps instead of 24 (the fastest non-local variant).
    "groupsc-knn12": (
        MethodInfo(
            "groupsc-knn12",
            "GroupSC (k-NN, K=12)",
            "trained",
            DENOISE,
            published_names=("GroupSC",),
        ),
        _trained("groupsc-knn12"),
    ),
    # Issue 16's cpu-budget experiment: the k-NN GroupSC on the authors' forward pass,
    # fine-tuned from SC or trained from the dictionary for the same total CPU time.
    "groupsc-knn-ft": (
        MethodInfo(
            "groupsc-knn-ft",
            "GroupSC (k-NN, authors' forward, from SC)",
            "trained",
            DENOISE,
            published_names=("GroupSC",),
        ),
        _trained("groupsc-knn-ft"),
    ),
    "groupsc-knn-dict": (
        MethodInfo(
            "groupsc-knn-dict",
            "GroupSC (k-NN, authors' forward, from the dictionary)",
            "trained",
            DENOISE,
            published_names=("GroupSC",),
        ),
        _trained("groupsc-knn-dict"),
    ),
    # The comparison models of train.comparison, trained here (names distinct from the released).
    "dncnn-s-trained": (
        MethodInfo(
            "dncnn-s-trained",
            "DnCNN-S (trained)",
            "trained",
            DENOISE,
            published_names=("DnCNN-S", "DnCNN"),
        ),
        _trained("dncnn-s-trained"),
    ),
    # No published PANet-S figure by task and dataset (Table 4 gives one PSNR without them),
    # and the published "PANet" rows are the 80-block model: no alias to them.
    "panet-s": (
        MethodInfo("panet-s", "PANet-S", "trained", DENOISE, published_names=("PANet-S",)),
        _trained("panet-s", _panet_chop),
    ),
    # The variant of train.comparison.nsr_gray_25 (sparse-), as NSR's Table 5 names it.
    "nsr": (
        MethodInfo("nsr", "NSR (sparse-)", "trained", DENOISE, published_names=("Sparse-",)),
        _trained("nsr", _nsr_patches),
    ),
    "dcsc-trained": (
        MethodInfo(
            "dcsc-trained", "DCSC (trained)", "trained", ("jpeg",), published_names=("DCSC",)
        ),
        _trained("dcsc-trained"),
    ),
}
