"""The classic autoencoders' loss strategy: trained by the same loop as the VAEs (:mod:`.loop`).

:class:`AutoencoderStrategy` is what differs from SVI: the loss of a batch is the autoencoder's mean
reconstruction error plus its penalty (per point), the corruption noise of a denoising autoencoder
comes from its own seeded stream per epoch, and the test split is scored by its reconstruction error
(an autoencoder has no likelihood, so no ELBO). :func:`fit_autoencoder` has ``fit``'s conventions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..autoencoders import Autoencoder, mean_reconstruction_error
from ..data import Dataset
from ..errors import ArgumentTypeError, UserError
from ..store.checkpoint import load_model_state, load_optimizer_state, save_checkpoint
from ..store.lock import lock_folder
from .data import as_train_data, validate
from .distributed import DistContext
from .loop import run_epochs
from .state import (
    History,
    TrainState,
    new_state,
    remember,
    resolve_device,
    state_of,
    training_summary,
)

__all__ = ["AutoencoderStrategy", "fit_autoencoder"]


class AutoencoderStrategy:
    """The loss strategy of :func:`~ppl_vae.train.loop.run_epochs` for an autoencoder: mean reconstruction
    error (plus penalty) per point; a seeded corruption-noise stream per epoch."""

    def __init__(self, ae: Autoencoder) -> None:
        self.ae = ae
        self.module = ae
        self.label = ae.spec
        self.noise: torch.Generator | None = None
        self.sums = {"loss": 0.0, "reconstruction": 0.0, "penalty": 0.0}
        self.defers_updates = False  # no compiled whole step: every loss is read when it is made

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def fused_epoch(
        self, rows: tuple[torch.Tensor, ...], first_step: int, epoch: int, batch_size: int
    ) -> None:
        return None

    def begin_epoch(self, seed: int, device: torch.device) -> None:
        self.ae.train()
        self.noise = torch.Generator(device=device).manual_seed(seed + 2)
        self.sums = dict.fromkeys(self.sums, 0.0)

    def kl_weight(self, step: int, epoch: int) -> float:
        return 1.0

    def loss(
        self, batch: tuple[torch.Tensor, ...], scale: float, weight: float, step: int
    ) -> torch.Tensor:
        terms = self.ae.loss_terms(batch[0], generator=self.noise)
        if math.isfinite(
            float(terms["loss"].detach())
        ):  # the guard reads the loss; a bad one is never applied
            terms["loss"].backward()
            for key in self.sums:
                self.sums[key] += float(terms[key].detach()) * len(batch[0])
        return terms["loss"].detach()

    def epoch_record(self, total: float, n: int, scale: float) -> dict[str, Any]:
        return {
            "train_loss": self.sums["loss"] / n,
            "train_reconstruction": self.sums["reconstruction"] / n,
            "train_penalty": self.sums["penalty"] / n,
        }

    def test_record(
        self, test: tuple[torch.Tensor, ...] | None, seed: int, ctx: DistContext
    ) -> dict[str, Any]:
        self.ae.eval()
        return {
            "test_loss": mean_reconstruction_error(self.ae, test[0]) if test is not None else None
        }

    def checkpoint_params(self) -> dict[str, torch.Tensor]:
        return {}


def fit_autoencoder(
    ae: Autoencoder,
    data: Dataset | torch.Tensor,
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
    state: TrainState | None = None,
) -> History:
    """Train an autoencoder with Adam on mini-batches, in the same loop as :func:`ppl_vae.fit`.

    Same seeding (each epoch re-seeds shuffling, dynamic binarisation and the corruption noise from
    ``(seed, epoch)``; the caller's RNG is untouched), same continuation (a second call, ``state=``,
    or ``resume=True`` from ``checkpoint_dir``), same NaN guard, same checkpoints after every epoch.

    Returns:
        :class:`~ppl_vae.train.History` of records with ``epoch``, ``step``, ``train_loss`` (the
        objective, penalty included, averaged over the epoch's batches, per point),
        ``train_reconstruction`` and ``train_penalty`` (its two parts), ``test_loss`` (the
        reconstruction error of the clean test split at the end of the epoch, per point),
        ``seconds`` and ``objective`` (the model's :attr:`~Autoencoder.spec`); ``.state``.

    Examples:
        >>> import torch
        >>> import ppl_vae as pv
        >>> x = torch.rand(64, 6, generator=torch.Generator().manual_seed(0))
        >>> ae = pv.make_autoencoder("ae", input_dim=6, latent_dim=2, hidden_dims=(8,))
        >>> history = pv.fit_autoencoder(ae, x, epochs=2, progress=False)
        >>> [record["epoch"] for record in history]
        [1, 2]
    """
    from .svi import check_fit_args

    check_fit_args(epochs, batch_size, lr, "auto", time_budget)
    if not isinstance(ae, Autoencoder):
        raise ArgumentTypeError(
            f"fit_autoencoder trains a ppl_vae Autoencoder; got {type(ae).__name__} "
            "(use ppl_vae.fit for a VAE)"
        )
    dev = resolve_device(device)
    state = state or state_of(ae) or new_state(ae, seed)
    train = as_train_data(data, test_data, None)

    def check(rows: tuple[torch.Tensor, ...], arg: str) -> tuple[torch.Tensor, ...]:
        return (ae.check_data(rows[0], arg), *rows[1:])

    train = validate(train, check, state.validated).to(dev)
    ae.to(dev)
    params = list(ae.parameters())
    if state.optimizer is None or [
        id(p) for g in state.optimizer.param_groups for p in g["params"]
    ] != [id(p) for p in params]:
        state.optimizer = torch.optim.Adam(params, lr=lr)
    resumed = None
    if resume:
        if checkpoint_dir is None:
            raise UserError("resume=True needs checkpoint_dir (where the run's checkpoint is)")
        config = load_model_state(checkpoint_dir, ae, dev)
        load_optimizer_state(checkpoint_dir, state.optimizer, dev)
        training = config.get("training") or {}
        state.epoch, state.step = int(training.get("epoch", 0)), int(training.get("step", 0))
        state.history = History(training.get("history", []))
        resumed = state.epoch
    for (
        group
    ) in state.optimizer.param_groups:  # after a resume: the lr asked for, not the saved one
        group["lr"] = lr
    state.objective = ae.spec
    state.seed = seed
    strategy = AutoencoderStrategy(ae)

    def save(st: TrainState) -> None:
        if checkpoint_dir is None:  # save runs only with a checkpoint_dir
            return
        save_checkpoint(
            checkpoint_dir,
            ae,
            optimizer=st.optimizer,
            training=training_summary(st, lr=lr, batch_size=batch_size),
            data_meta=train.meta,
        )

    with contextlib.ExitStack() as stack:
        if checkpoint_dir is not None:
            stack.enter_context(lock_folder(checkpoint_dir))
        run_epochs(
            strategy,
            train,
            state,
            params,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            ctx=DistContext(device=dev),
            checkpoint_dir=checkpoint_dir,
            save=save if checkpoint_dir is not None else None,
            progress=progress,
            time_budget=time_budget,
            callback=callback,
            resumed_epoch=resumed,
        )
    state.history.state = state
    remember(ae, state)
    return state.history
