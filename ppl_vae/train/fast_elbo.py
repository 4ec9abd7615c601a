"""The fast ELBO: Pyro's ``Trace_ELBO``/``TraceMeanField_ELBO`` surrogate with one light messenger per program.

:func:`fast_elbo_loss` runs the guide and the model under :class:`SiteRecorder`, which scales the data plate's
sites like :class:`~ppl_vae.programs.DataPlateScale`, replays the guide's latents into the model and records
the sample sites; the surrogate is summed in Pyro's own order from the same ``log_prob``/``kl_divergence``
calls, so value and gradients equal Pyro's (checked on the first batch by :class:`~.fast.FastEngine`). It
applies to ``trace``/``analytic`` with one particle and a guide whose latent sites are reparameterised,
not enumerated and all in the model (:func:`structure_problem` says why not otherwise). :class:`ELBOLoss` is
the module the graph path captures and ``DistributedDataParallel`` wraps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import kl_divergence

from ..objectives import Objective
from ..programs import DataPlateScale, Program, ProgramInfo

__all__ = [
    "ELBOLoss",
    "SiteRecorder",
    "fast_elbo_loss",
    "fast_path_supports",
    "graph_path_supports",
    "same_loss_and_grads",
    "structure_problem",
]


class SiteRecorder(DataPlateScale):
    """One light pass over a Pyro program: scale the data plate's sites, replay latents, record sites.

    Stands in for ``poutine.trace(poutine.replay(DataPlateScale(...)))``: scales as
    :class:`~ppl_vae.programs.DataPlateScale` does, replays the latent values of ``replay`` (the
    guide's sites) like ``poutine.replay``, and keeps the final messages.
    """

    def __init__(
        self,
        plate: str,
        scale: float = 1.0,
        latent_weight: float | torch.Tensor = 1.0,
        replay: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        # a tensor KL weight (an input of the compiled step, so annealing does not recompile) is applied here
        self.weight_tensor = latent_weight if isinstance(latent_weight, torch.Tensor) else None
        super().__init__(
            plate, scale, 1.0 if isinstance(latent_weight, torch.Tensor) else latent_weight
        )
        self.replay = replay
        self.sites: dict[str, Mapping[str, Any]] = {}

    def _process_message(self, msg: Message) -> None:
        if msg["type"] != "sample":
            return
        if self.replay is not None and not msg["is_observed"]:
            guide_msg = self.replay.get(cast(str, msg["name"]))
            if guide_msg is not None:
                msg["done"] = True
                msg["value"] = guide_msg["value"]
                msg["infer"] = guide_msg["infer"]
        super()._process_message(msg)
        if self.weight_tensor is not None and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.weight_tensor * msg["scale"]

    def _postprocess_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or type(msg["fn"]).__name__ == "_Subsample":
            return
        name = cast(str, msg["name"])
        if name in self.sites:
            raise RuntimeError(f"Multiple sample sites named '{name}'")
        self.sites[name] = msg


def _log_prob_sum(site: Mapping[str, Any]) -> torch.Tensor:
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


def _surrogate_loss(
    model_sites: Mapping[str, Mapping[str, Any]],
    guide_sites: Mapping[str, Mapping[str, Any]],
    analytic: bool,
) -> torch.Tensor:
    """Minus the surrogate ELBO, summed in the order of Pyro's ``_differentiable_loss_particle``."""
    elbo: Any = 0.0
    if not analytic:  # Trace_ELBO: log p over the model's sites, minus log q over the guide's
        for site in model_sites.values():
            elbo = elbo + _log_prob_sum(site)
        for site in guide_sites.values():
            elbo = elbo - _log_prob_sum(site)
        return -elbo
    for name, site in model_sites.items():  # TraceMeanField_ELBO: closed-form KL where registered
        if site["is_observed"]:
            elbo = elbo + _log_prob_sum(site)
            continue
        guide_site = guide_sites[name]
        try:
            kl = kl_divergence(guide_site["fn"], site["fn"])
        except NotImplementedError:
            elbo = elbo + _log_prob_sum(site) - _log_prob_sum(guide_site)
            continue
        kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"])
        if torch.is_tensor(kl):
            elbo = elbo - kl.sum()
        else:
            elbo = elbo - kl * torch.Size(guide_site["fn"].batch_shape).numel()
    return -elbo


def fast_elbo_loss(
    model: Callable,
    guide: Callable,
    *batch: torch.Tensor,
    analytic: bool,
    scale: float = 1.0,
    latent_weight: float = 1.0,
    data_plate: str = "data",
) -> torch.Tensor:
    """The differentiable negative ELBO of ``model``/``guide`` on ``batch`` without Pyro's trace machinery.

    Equal (same samples, value and gradients) to ``Trace_ELBO().differentiable_loss`` (``analytic=False``)
    or ``TraceMeanField_ELBO().differentiable_loss`` (``analytic=True``) under
    ``DataPlateScale(data_plate, scale, latent_weight)``, for one particle and a guide whose latent sites
    are reparameterised, not enumerated and all in the model (:meth:`FastEngine.check` decides).
    """
    guide_run = SiteRecorder(data_plate, scale, latent_weight)
    with guide_run:
        guide(*batch)
    model_run = SiteRecorder(data_plate, scale, latent_weight, replay=guide_run.sites)
    with model_run:
        model(*batch)
    return _surrogate_loss(model_run.sites, guide_run.sites, analytic)


def structure_problem(info: ProgramInfo) -> str | None:
    """Why the fast ELBO cannot stand in for Pyro's on this program, or None."""
    if info.non_reparam:
        return f"guide site(s) {sorted(info.non_reparam)} have no reparameterised sampler"
    if info.enumerated:
        return f"site(s) {sorted(info.enumerated)} are marked for enumeration"
    if info.guide_aux:
        return f"guide site(s) {sorted(info.guide_aux)} are auxiliary"
    if info.model_only:
        return f"model site(s) {sorted(info.model_only)} have no guide site"
    return None


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    if not loss.requires_grad or not params:
        return [None] * len(params)
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def close(a: torch.Tensor | None, b: torch.Tensor | None, rtol: float) -> bool:
    if a is None or b is None:
        return (a is None or not a.any()) and (b is None or not b.any())
    atol = rtol * max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def same_loss_and_grads(
    a: torch.Tensor, b: torch.Tensor, params: list[torch.Tensor], rtol: float
) -> bool:
    if not (torch.isfinite(a) and torch.isfinite(b)):
        return False
    if not math.isclose(float(a.detach()), float(b.detach()), rel_tol=rtol, abs_tol=rtol):
        return False
    return all(
        close(ga, gb, rtol) for ga, gb in zip(grads(a, params), grads(b, params), strict=True)
    )


class ELBOLoss(nn.Module):
    """``forward(*batch, scale, latent_weight)`` -> the objective's differentiable loss on a batch.

    Its parameters are the program's module's: the module wrapped by ``DistributedDataParallel`` and
    captured by the graph path. ``fast=True`` computes :func:`fast_elbo_loss`; otherwise the objective's
    loss under :class:`~ppl_vae.programs.DataPlateScale`.
    """

    def __init__(self, program: Program, objective: Objective, fast: bool) -> None:
        super().__init__()
        self.program = program
        self.vae = program.module  # registered as a submodule: its parameters are this module's
        self.objective = objective
        self.fast = fast
        entry = objective.entry
        self.analytic = entry is not None and entry.trait("surrogate") == "analytic"

    def forward(
        self, *batch: torch.Tensor, scale: float = 1.0, latent_weight: float = 1.0
    ) -> torch.Tensor:
        p = self.program
        if self.fast:
            return fast_elbo_loss(
                p.model,
                p.guide,
                *batch,
                analytic=self.analytic,
                scale=scale,
                latent_weight=latent_weight,
                data_plate=p.data_plate,
            )
        with DataPlateScale(p.data_plate, scale, latent_weight):
            return self.objective.loss(p.model, p.guide, *batch)


def fast_path_supports(objective: Objective) -> bool:
    """Whether the fast ELBO stands in for an objective: its registry entry declares the ``fast_elbo``
    path for these parameters (``trace``/``analytic`` with one particle), and its loss is not overridden."""
    return "fast_elbo" in objective.fast_paths and type(objective).loss is Objective.loss


def graph_path_supports(objective: Objective) -> bool:
    """The fast ELBO's objectives, and those declaring the ``graph`` path (whose own Pyro loss is captured)."""
    return fast_path_supports(objective) or (
        "graph" in objective.fast_paths and type(objective).loss is Objective.loss
    )
