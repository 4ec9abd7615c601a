"""Run folders: train a model into one, and load one back with its data.

A run folder holds what one training run produced::

    RUN_DIR/metrics.json     {"history": [...], "config": {...}, "final_test_elbo": ...}
    RUN_DIR/checkpoint/      safetensors weights + config.json (see ppl_vae.checkpoint)

``config`` records the arguments of :func:`ppl_vae.data.load_dataset` (``data_args``),
so :func:`load_run` rebuilds exactly the same split and binarisation for evaluation.
The CLI (``ppl-vae train``, ``evaluate``, ``plot``, ...) and the comparison harness
go through these two functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .autoencoders import Autoencoder, fit_autoencoder, make_autoencoder
from .checkpoint import CheckpointError, load_checkpoint, write_json
from .data import Dataset, load_dataset
from .distributed import is_main_process
from .models import VAE
from .train import History, fit, resolve_device, training_summary

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist")


@dataclass
class Run:
    """A trained model with its data, history and folder."""

    model: VAE
    data: Dataset
    history: History
    config: dict[str, Any]
    path: Path | None = None


def default_likelihood(dataset: str) -> str:
    """Bernoulli (after binarisation) for the image sets, Gaussian for points and tables."""
    return "bernoulli" if dataset in IMAGE_DATASETS else "gaussian"


def resolve_binarize(binarize: str | None, likelihood: str) -> str | None:
    """``"auto"``: dynamic binarisation where the likelihood is Bernoulli, none otherwise."""
    if binarize == "auto":
        return "dynamic" if likelihood == "bernoulli" else None
    if binarize in ("none", "", None):
        return None
    return binarize


def train_run(
    out: str | Path | None,
    *,
    dataset: str = "digits",
    objective: str = "analytic",
    latent_dim: int = 8,
    hidden_dims: tuple[int, ...] = (256,),
    likelihood: str = "auto",
    activation: str = "relu",
    binarize: str | None = "auto",
    data_dir: str | None = None,
    n_samples: int | None = None,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    time_budget: float | None = None,
    model: str = "vae",
    ae_options: dict[str, Any] | None = None,
) -> Run:
    """Load data, build a VAE, train it, and write ``metrics.json`` + ``checkpoint/`` into ``out``.

    Refuses to overwrite an existing run unless ``resume=True`` (then training continues from
    its checkpoint for ``epochs`` more epochs with the recorded model and data settings).

    ``model``: ``"vae"`` (default), or an autoencoder of :mod:`ppl_vae.autoencoders`
    (``"ae"``, ``"dae"``, ``"sae"``, ``"cae"``) trained by
    :func:`~ppl_vae.autoencoders.fit_autoencoder` on the same data; ``ae_options`` are its
    keyword arguments (``reconstruction`` ``"auto"``/None: BCE for images, MSE otherwise;
    ``noise``, ``sigma``, ``p``, ``rho``, ``lam``, ``code_activation``). ``objective`` and
    ``likelihood`` apply to the VAE only. The run folder has the same layout; its history has
    ``train_loss``/``test_loss`` (reconstruction error per point) instead of ELBOs.
    """
    if model != "vae" and model not in ("ae", "dae", "sae", "cae"):
        raise ValueError(f"model must be 'vae', 'ae', 'dae', 'sae' or 'cae'; got {model!r}")
    ae_options = dict(ae_options or {})
    if model == "vae" and any(v is not None for v in ae_options.values()):
        raise ValueError(f"options {sorted(k for k, v in ae_options.items() if v is not None)} are for "
                         "autoencoders (model 'ae', 'dae', 'sae', 'cae'), not for the VAE")
    out_path = Path(out) if out is not None else None
    if out_path is not None and (out_path / "checkpoint" / "config.json").exists() and not resume:
        raise FileExistsError(
            f"{str(out_path)!r} already holds a run: pass --resume to continue it, or choose another --out"
        )
    if resume:
        if out_path is None or not (out_path / "metrics.json").exists():
            raise FileNotFoundError(f"cannot resume: no run in {str(out_path)!r} (metrics.json missing)")
        config = json.loads((out_path / "metrics.json").read_text())["config"]
        data_args, model_config = config["data_args"], config["model"]
        objective = config["objective"] if objective is None else objective
    else:
        lik = default_likelihood(dataset) if likelihood == "auto" else likelihood
        if model != "vae":
            if likelihood not in ("auto", None):
                raise ValueError(f"likelihood={likelihood!r} is for the VAE; an autoencoder takes reconstruction='bce'|'mse'")
            if ae_options.get("reconstruction") in ("auto", None):
                ae_options["reconstruction"] = "bce" if dataset in IMAGE_DATASETS else "mse"
            lik = "bernoulli" if ae_options["reconstruction"] == "bce" else "gaussian"
        data_args = {
            "name": dataset,
            "binarize": resolve_binarize(binarize, lik.partition(":")[0]),
            "seed": seed,
            "data_dir": data_dir,
            "n_samples": n_samples,
        }
        model_config = None
    data = load_dataset(**data_args)
    kind = model
    if model_config is None and kind != "vae":
        model = make_autoencoder(kind, data.meta.input_dim, latent_dim, hidden_dims=hidden_dims,
                                 activation=activation, **ae_options)
    elif model_config is None:
        model = VAE(data.meta.input_dim, latent_dim, hidden_dims, likelihood=lik, activation=activation)
    else:
        from .models import build_model

        model = build_model(model_config)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model if resume else _reinit(model, seed)
    ckpt = out_path / "checkpoint" if out_path is not None else None
    common = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, checkpoint_dir=ckpt,
                  resume=resume, progress=progress, time_budget=time_budget)
    if isinstance(model, Autoencoder):
        history = fit_autoencoder(model, data, **common)
    else:
        history = fit(model, data, objective, **common)
    config = {
        "dataset": data_args["name"],
        "data_args": data_args,
        "data_meta": data.meta.to_dict(),
        "model": model.config,
        "model_kind": getattr(model, "short_name", "vae"),
        "objective": str(model._train_state.objective),
        "epochs": model._train_state.epoch,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": str(resolve_device(device)),
    }
    if out_path is not None and is_main_process():  # under torchrun, rank 0 alone writes
        write_json(out_path / "metrics.json", {
            "history": list(history),
            "config": config,
            "final_test_elbo": history.final_test_elbo,
            **({"final_test_loss": history[-1].get("test_loss") if history else None}
               if isinstance(model, Autoencoder) else {}),
            "training": training_summary(model._train_state),
        })
    return Run(model, data, history, config, out_path)


def _reinit(model: VAE, seed: int) -> VAE:
    """Re-initialise every layer from ``seed`` so the same seed gives the same starting weights."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    return model


def load_run(run_dir: str | Path, device: str = "cpu", load_data: bool = True) -> Run:
    """Load a run folder: the model from ``checkpoint/`` and the same data split it was trained on."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{str(run_dir)!r} is not a ppl_vae run folder (no metrics.json); make one with `ppl-vae train --out DIR`"
        )
    try:
        metrics = json.loads(metrics_path.read_text())
        config = metrics["config"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{metrics_path} is corrupt or not from ppl_vae: {err}") from None
    model, ckpt_config = load_checkpoint(run_dir / "checkpoint", device=resolve_device(device))
    data = load_dataset(**config["data_args"]) if load_data else None
    if data is not None and data.meta.input_dim != model.input_dim:
        raise CheckpointError(
            f"the checkpoint in {str(run_dir)!r} is for {model.input_dim}-dimensional data, "
            f"but its dataset now has {data.meta.input_dim} dimensions"
        )
    history = History(metrics.get("history", []))
    return Run(model, data, history, config, run_dir)
