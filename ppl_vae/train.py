"""Stochastic variational inference for a VAE: the training loop.

For a data set of N points and a mini-batch B, the objective's loss on the batch
is scaled by N / |B| (``poutine.scale`` over model and guide, i.e. over the
data plate), so each step is an unbiased estimate of the full-data negative
ELBO and its gradient (Hoffman et al., 2013):

    loss(B) = -(N / |B|) sum_{n in B} ELBO_n,      ELBO_n = E_q[log p(x_n, z) - log q(z | x_n)]

The network parameters are updated by a plain ``torch.optim.Adam`` on the
module's own parameters; Pyro's ``pyro.module`` registrations run inside a
scoped parameter store, so nothing leaks into (or is read from) the global one
and two models can be trained in one process.

Reproducibility: every epoch re-seeds its own random streams from
``(seed, epoch)`` inside :func:`torch.random.fork_rng`, so the same seed gives
the same history on CPU, resuming from a checkpoint gives the same numbers as
an uninterrupted run, and the caller's global RNG is left as it was.

Safety: a non-finite loss stops training at once; the model is put back to the
state at the end of the last good epoch (which is also the last checkpoint on
disk) and :class:`TrainingDiverged` names the epoch and step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import TraceMeanField_ELBO
from tqdm.auto import tqdm

from .checkpoint import load_model_state, load_optimizer_state, read_config, save_checkpoint
from .data import Dataset
from .models import VAE
from .objectives import Objective, parse_objective, scale_latents


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model was restored to the last good epoch."""


class History(list):
    """Per-epoch records (dicts with ``epoch``, ``step``, ``train_elbo``, ``test_elbo``, ``seconds``, ...)."""

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self))

    @property
    def final_test_elbo(self) -> float | None:
        return self[-1].get("test_elbo") if self else None


@dataclass
class TrainState:
    """What ``fit`` keeps on the model between calls, so a second call continues training."""

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    optimizer: torch.optim.Optimizer | None = None
    objective: str | None = None
    seed: int = 0


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but torch sees no CUDA device: use device='cpu' or 'auto'")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from None


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919) % (2**63 - 1)


def _as_dataset(data: Dataset | torch.Tensor, test_data: torch.Tensor | None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, torch.Tensor):
        return Dataset.from_tensors(data, test_data, name="tensor", test_fraction=0.0)
    raise TypeError(f"data must be a ppl_vae Dataset or a torch.Tensor (N, D); got {type(data).__name__}")


@torch.no_grad()
def mean_elbo(
    vae: VAE, x: torch.Tensor, batch_size: int = 1024, seed: int = 0
) -> float:
    """Mean ELBO in nats per data point with the closed-form KL, one sample of z per point.

    The fixed ``seed`` makes per-epoch test values comparable across epochs and methods.
    """
    if x is None or len(x) == 0:
        return float("nan")
    elbo = TraceMeanField_ELBO(max_plate_nesting=1)
    total = 0.0
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            total += elbo.loss(vae.model, vae.guide, x[start : start + batch_size])
    return -total / len(x)


def fit(
    vae: VAE,
    data: Dataset | torch.Tensor,
    objective: str | Objective = "analytic",
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    test_data: torch.Tensor | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    time_budget: float | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> History:
    """Train ``vae`` by SVI on ``data`` and return the per-epoch history.

    Args:
        vae: the model (its ``model``/``guide`` Pyro programs are trained).
        data: a :class:`~ppl_vae.data.Dataset` (train and test splits, binarisation) or a
            tensor ``(N, D)`` of training data (then ``test_data`` is optional).
        objective: a name such as ``"trace"``, ``"analytic"`` (see :mod:`ppl_vae.objectives`).
        epochs: number of further epochs to run (a second call continues where the first stopped).
        batch_size: mini-batch size; the last batch of an epoch may be smaller.
        lr: Adam learning rate.
        seed: seeds shuffling, dynamic binarisation and the samples of z, per epoch.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        checkpoint_dir: if given, a checkpoint is written atomically after every epoch.
        resume: load the weights, optimizer and history from ``checkpoint_dir`` first.
        progress: show a progress bar.
        time_budget: stop after the epoch in which this many seconds of training have passed.
        callback: called with each epoch's record.

    Returns:
        :class:`History`: ``train_elbo`` is the training objective's bound averaged over the
        epoch's batches (nats per point, as the parameters moved); ``test_elbo`` is the
        closed-form-KL ELBO on the test split at the end of the epoch (nats per point).

    Raises:
        ValueError: bad data or arguments (named in the message).
        TrainingDiverged: the loss became non-finite (model restored to the last good epoch).
    """
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if arg == "epochs" else 1):
            raise ValueError(f"{arg} must be a {'non-negative' if arg == 'epochs' else 'positive'} integer; got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number; got {lr!r}")
    dataset = _as_dataset(data, test_data)
    obj = parse_objective(objective)
    dev = resolve_device(device)

    # validate once at the boundary; the hot loop then runs with validation off
    train_x = vae.check_data(dataset.train, "data.train")
    test_x = vae.check_data(dataset.test, "data.test") if dataset.test is not None and len(dataset.test) else None
    if dataset.meta.binarize == "dynamic":
        vae.check_data(dataset.train_probs.clamp(0, 1).round(), "data.train_probs")
    dataset = dataset.to(dev)
    vae.to(dev)

    state: TrainState = getattr(vae, "_train_state", None) or TrainState(seed=seed)
    if state.optimizer is None or any(
        p.device != dev for g in state.optimizer.param_groups for p in g["params"]
    ):
        state.optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (where the run's checkpoint is)")
        _resume(vae, state, Path(checkpoint_dir), dev)
    vae._train_state = state
    state.objective = obj.spec

    n = train_x.shape[0]
    scale = float(n)
    good = copy.deepcopy(vae.state_dict())
    started = time.perf_counter()
    bar = tqdm(total=epochs, desc=f"fit {obj.spec}", unit="epoch", disable=not progress, leave=False)
    try:
        with pyro.get_param_store().scope(), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), \
                pyro.validation_enabled(False):
            for _ in range(epochs):
                epoch = state.epoch + 1
                epoch_seed = _epoch_seed(seed, epoch)
                torch.manual_seed(epoch_seed)
                gen = torch.Generator().manual_seed(epoch_seed + 1)
                x_epoch = dataset.resample_train(gen)
                perm = torch.randperm(n, generator=gen).to(dev)
                t0 = time.perf_counter()
                vae.train()
                total = 0.0
                for batch_start in range(0, n, batch_size):
                    idx = perm[batch_start : batch_start + batch_size]
                    xb = x_epoch[idx]
                    weight = obj.kl_weight(state.step, epoch)
                    with poutine.scale(scale=scale / len(idx)):
                        loss = _loss_with_kl_weight(obj, vae, xb, weight)
                    value = loss.item()
                    if not math.isfinite(value):
                        vae.load_state_dict(good)
                        where = f" (last good checkpoint: {checkpoint_dir}, epoch {state.epoch})" if checkpoint_dir else ""
                        raise TrainingDiverged(
                            f"loss became {value} at epoch {epoch}, step {state.step + 1} "
                            f"(batch starting at row {batch_start} of the shuffled epoch); training stopped "
                            f"and the model was restored to the end of epoch {state.epoch}{where}. "
                            "Try a smaller lr or check the data"
                        )
                    state.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    state.optimizer.step()
                    state.step += 1
                    total += value * len(idx)
                seconds = time.perf_counter() - t0
                vae.eval()
                record = {
                    "epoch": epoch,
                    "step": state.step,
                    "train_elbo": -total / (scale * n),
                    "test_elbo": mean_elbo(vae, test_x.to(dev), seed=seed) if test_x is not None else None,
                    "seconds": seconds,
                    "kl_weight": obj.kl_weight(state.step, epoch),
                    "objective": obj.spec,
                }
                state.epoch = epoch
                state.history.append(record)
                good = copy.deepcopy(vae.state_dict())
                if checkpoint_dir is not None:
                    save_checkpoint(
                        checkpoint_dir, vae, optimizer=state.optimizer,
                        training=training_summary(state, lr=lr, batch_size=batch_size),
                        data_meta=dataset.meta.to_dict(),
                    )
                if callback is not None:
                    callback(record)
                bar.update(1)
                bar.set_postfix(train=f"{record['train_elbo']:.2f}", test=f"{record['test_elbo'] or float('nan'):.2f}")
                if time_budget is not None and time.perf_counter() - started >= time_budget:
                    break
    finally:
        bar.close()
    return state.history


def _loss_with_kl_weight(obj: Objective, vae: VAE, xb: torch.Tensor, weight: float) -> torch.Tensor:
    if weight == 1.0:
        return obj.loss(vae.model, vae.guide, xb)
    with scale_latents(weight):
        return obj.loss(vae.model, vae.guide, xb)


def training_summary(state: TrainState, **settings: Any) -> dict[str, Any]:
    """The JSON-able part of a :class:`TrainState` (for checkpoints and metrics.json)."""
    return {
        "epoch": state.epoch,
        "step": state.step,
        "seed": state.seed,
        "objective": state.objective,
        "history": list(state.history),
        **settings,
    }


def _resume(vae: VAE, state: TrainState, directory: Path, dev: torch.device) -> None:
    config = read_config(directory)
    load_model_state(directory, vae, dev)
    load_optimizer_state(directory, state.optimizer, dev)
    training = config.get("training", {})
    state.epoch = int(training.get("epoch", 0))
    state.step = int(training.get("step", 0))
    state.history = History(training.get("history", []))
