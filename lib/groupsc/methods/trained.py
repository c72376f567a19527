"""Models trained here: loaded from ``checkpoints/<run>/model.pt`` with their budget."""

from __future__ import annotations

import torch

from groupsc.methods.base import DENOISE, Builder, MethodInfo, Restorer, TorchRestorer

TASK_SHORT = {
    "gray_denoise": "gray",
    "color_denoise": "color",
    "jpeg": "jpeg",
    "demosaic": "mosaic",
    "blind_color_denoise": "cblind",
}


def trained_run(kind: str, task: str, level: float) -> str:
    """The ``params.yaml`` run (and ``checkpoints/`` folder) of a trained model: ``sc_gray_25``.

    ``kind`` is the method key (``sc``, ``groupsc``, ``groupsc-knn``...); the model kind itself
    is read from the checkpoint.
    """
    return f"{kind}_{TASK_SHORT[task]}_{float(level):g}"


def load_trained(run: str) -> torch.nn.Module:
    """A model trained here (``checkpoints/<run>/model.pt``), with ``budget`` and ``n_params``."""
    from groupsc.fit import build_model
    from groupsc.models import count_parameters
    from groupsc.paths import DataMissingError, repo_root
    from groupsc.train import budget_label

    path = repo_root() / "checkpoints" / run / "model.pt"
    if not path.exists():
        raise DataMissingError(
            f"{path} is missing: train it with `dvc repro train@{run}` "
            f"(or `python -m groupsc.fit {run}`)"
        )
    ck = torch.load(path, weights_only=True)
    cfg = dict(ck["model_config"])
    model = build_model(cfg.pop("kind"), cfg)
    model.load_state_dict(ck["model"])
    model.budget = f"{ck['budget'].get('budget', '')} budget: {budget_label(ck['budget'])}"
    model.n_params = str(count_parameters(model))
    return model.eval()


def _trained(kind: str) -> Builder:
    def build(task: str, level: float) -> Restorer:
        model = load_trained(trained_run(kind, task, level))
        restorer = TorchRestorer(model)
        restorer.budget, restorer.params = model.budget, model.n_params
        return restorer

    return build


METHODS: dict[str, tuple[MethodInfo, Builder]] = {
    "sc": (
        MethodInfo("sc", "SC", "trained", DENOISE, published_names=("SC",)),
        _trained("sc"),
    ),
    "csr": (
        MethodInfo("csr", "CSR", "trained", DENOISE, published_names=("CSR",)),
        _trained("csr"),
    ),
    "groupsc": (
        MethodInfo("groupsc", "GroupSC", "trained", DENOISE, published_names=("GroupSC",)),
        _trained("groupsc"),
    ),
    # The fast variant (k nearest patches within a small radius, sparse products); compared
    # with the paper's (dense) GroupSC figures.
    "groupsc-knn": (
        MethodInfo(
            "groupsc-knn", "GroupSC (k-NN)", "trained", DENOISE, published_names=("GroupSC",)
        ),
        _trained("groupsc-knn"),
    ),
}
