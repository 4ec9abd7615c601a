r"""The KL weight: β-VAEs and annealing, applied to the latent sites of model and guide.

Every ELBO objective takes ``beta`` (float, default 1) and a linear warm-up of the KL weight from
0 to β: ``anneal=E`` over the first E epochs or ``anneal_steps=S`` over the first S optimiser steps,

.. math::

    \mathcal{L}_\beta = \mathbb{E}_q[\log p(x \mid z)] - \beta\, \mathrm{KL}(q(z \mid x) \,\|\, p(z)),
    \qquad \beta_t = \beta \min(1, t / T).

β > 1 is the β-VAE (Higgins et al., 2017); the warm-up is KL annealing (Bowman et al., 2016). The
weight multiplies the scale of every *latent* site in model and guide (the trainer's
:class:`~ppl_vae.programs.DataPlateScale` carries it, :class:`scale_latents` does the same on its
own), so it works for ``Trace_ELBO`` (scales log p(z) - log q(z)) and ``TraceMeanField_ELBO``
(scales the closed-form KL) alike.
"""

from __future__ import annotations

from typing import Any

from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message

from ..errors import UserError

__all__ = ["SCHEDULE_PARAMS", "kl_schedule", "scale_latents"]

#: Parameters of the KL-weight schedule, read by :meth:`~ppl_vae.objectives.Objective.kl_weight`.
SCHEDULE_PARAMS: dict[str, Any] = {"beta": 1.0, "anneal": 0, "anneal_steps": 0}


def kl_schedule(
    step: int, epoch: int, beta: float = 1.0, anneal: int = 0, anneal_steps: int = 0
) -> float:
    """The KL weight at a training step: ``beta * min(1, t / T)`` during a linear warm-up.

    Args:
        step: optimiser steps taken before this one (0 for the first step).
        epoch: the current epoch, counted from 1.
        beta: the weight after the warm-up (1: the plain ELBO; > 1: beta-VAE).
        anneal: warm-up length in epochs (0: none). Epoch ``e`` gets ``beta * min(1, (e - 1) / anneal)``:
            0 in the first epoch, ``beta`` from epoch ``anneal + 1`` on.
        anneal_steps: warm-up length in steps (0: none): ``beta * min(1, step / anneal_steps)``.
    """
    if anneal and anneal_steps:
        raise UserError(
            f"choose one warm-up: anneal={anneal} (epochs) or anneal_steps={anneal_steps}, not both"
        )
    if anneal_steps:
        return beta * min(1.0, step / anneal_steps)
    if anneal:
        return beta * min(1.0, max(epoch - 1, 0) / anneal)
    return beta


class scale_latents(Messenger):  # noqa: N801 - used like poutine.scale
    """Multiply the log-density scale of every *latent* sample site by ``weight``.

    Applied around an ELBO call it scales ``log p(z)`` in the model and ``log q(z | x)``
    in the guide (or the closed-form KL, which ``TraceMeanField_ELBO`` scales by the
    guide site's scale), leaving ``log p(x | z)`` alone: the KL term of the ELBO is
    multiplied by ``weight``, as in the beta-VAE (Higgins et al., 2017) and KL annealing.
    """

    def __init__(self, weight: float) -> None:
        if not weight >= 0:
            raise UserError(f"KL weight must be >= 0; got {weight!r}")
        super().__init__()
        self.weight = weight

    def _process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]
