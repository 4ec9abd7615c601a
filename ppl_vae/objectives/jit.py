r"""``Trace_ELBO`` and ``TraceMeanField_ELBO`` compiled with ``torch.jit.trace``, once per input shape.

pyro-ppl 1.9.2's ``JitTrace_ELBO``/``JitTraceMeanField_ELBO`` key their compile cache on the number
of arguments, ``id(model)`` and kwargs: a bound method ``vae.model`` is a new object on every
attribute access, ``JitTraceMeanField_ELBO`` stores its compiled function under another name than
the one it tests (so it calls ``torch.jit.trace`` on every step), and any ``poutine.scale`` active at
trace time is frozen into the graph (the mini-batch scale N/B of the first batch is reused for a
smaller last batch, and an annealed KL weight stays at its first value).
:class:`CachedJitTrace_ELBO` and :class:`CachedJitTraceMeanField_ELBO` compile once per
(model, guide, input shapes), and pass the scales of observed and latent sites as tensor inputs to
the compiled graph. ``torch.jit.trace`` is deprecated in torch 2.13; these stay for comparison
(``jit_trace``, ``jit_analytic``); the training loop's own graphs (``fit(fast=...)``) use ``make_fx``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.ops.jit
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.scale_messenger import ScaleMessenger
from pyro.poutine.trace_messenger import TraceMessenger

from .._torch_compat import pyro_handler_stack
from ..errors import ArgumentTypeError
from ..programs import DataPlateScale
from .schedule import scale_latents

__all__ = ["CachedJitTraceMeanField_ELBO", "CachedJitTrace_ELBO"]


class _SiteScales(Messenger):
    """Scale observed sites by ``obs`` and latent sites by ``latent`` (tensors inside a JIT graph)."""

    def __init__(self, obs: torch.Tensor, latent: torch.Tensor) -> None:
        super().__init__()
        self.obs = obs
        self.latent = latent

    def _process_message(self, msg: Message) -> None:
        if msg["type"] == "sample":
            msg["scale"] = (self.obs if msg["is_observed"] else self.latent) * msg["scale"]


def _outer_scales() -> tuple[float, float] | None:
    """The scales the active handlers put on observed and latent sites, or None if unknown.

    Known handlers: ``poutine.scale`` (both), :class:`scale_latents` (latent sites),
    :class:`~ppl_vae.programs.DataPlateScale` (both, for programs whose sites are all local), and
    ``poutine.trace(param_only=True)`` (no effect on samples; SVI uses it).
    """
    obs, latent = 1.0, 1.0
    stack = pyro_handler_stack()
    if stack is None:
        return None
    for frame in stack:
        if isinstance(frame, scale_latents):
            latent = latent * float(frame.weight)
        elif isinstance(frame, ScaleMessenger):
            if torch.is_tensor(frame.scale) and frame.scale.numel() != 1:
                return None
            obs, latent = obs * float(frame.scale), latent * float(frame.scale)
        elif isinstance(
            frame, DataPlateScale
        ):  # the trainer's; jit objectives take local-only programs
            obs = obs * float(frame.scale)
            latent = latent * float(frame.scale) * float(frame.latent_weight)
        elif isinstance(frame, TraceMessenger) and frame.param_only:
            continue
        else:
            return None
    return obs, latent


def _signature(args: tuple) -> tuple:
    sig = []
    for i, a in enumerate(args):
        if not torch.is_tensor(a):
            raise ArgumentTypeError(
                f"JIT objectives take tensors only as positional arguments; argument {i} is "
                f"{type(a).__name__}: pass non-tensors as keyword arguments"
            )
        sig.append((tuple(a.shape), str(a.dtype), str(a.device), a.requires_grad))
    return tuple(sig)


class _CachedJit:
    """Mixin: compile the tensor-only loss once per (model, guide, input shapes, kwargs).

    ``torch.jit.trace`` is deprecated in torch 2.13 and warns on every compile; those
    warnings are silenced here only (``ignore_jit_warnings`` also hides TracerWarnings).
    """

    def __init__(
        self,
        *args: Any,
        ignore_jit_warnings: bool = True,
        jit_options: dict | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ignore_jit_warnings = ignore_jit_warnings
        self.jit_options = dict(jit_options or {})
        self._compiled: dict[tuple, pyro.ops.jit.CompiledFunction] = {}
        self._fallback_warned = False

    @property
    def num_compiled(self) -> int:
        """How many graphs have been traced so far (one per model/guide pair and input signature)."""
        return sum(len(fn.compiled) for fn in self._compiled.values())

    def _tensor_loss(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        raise NotImplementedError

    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        scales = _outer_scales()
        if scales is None:  # an unknown handler is active: do not freeze it into a graph
            if not self._fallback_warned:
                warnings.warn(
                    f"{type(self).__name__}: an effect handler other than poutine.scale/scale_latents is "
                    "active around the loss; running the eager (uncompiled) loss so it is not frozen "
                    "into the graph",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._fallback_warned = True
            return self._tensor_loss(model, guide, args, kwargs)
        key = (model, guide)
        fn = self._compiled.get(key)
        if fn is None:

            def scaled_loss(
                obs_scale: torch.Tensor, latent_scale: torch.Tensor, *inner: Any, **kw: Any
            ) -> torch.Tensor:
                kw.pop("_signature")
                with _SiteScales(obs_scale, latent_scale):
                    return self._tensor_loss(model, guide, inner, kw)

            fn = pyro.ops.jit.trace(
                scaled_loss,
                ignore_warnings=self.ignore_jit_warnings,
                jit_options=dict(self.jit_options),
            )
            self._compiled[key] = fn
        ref = args[0] if args and torch.is_tensor(args[0]) else None
        obs = torch.tensor(
            scales[0],
            dtype=ref.dtype if ref is not None else None,
            device=ref.device if ref is not None else None,
        )
        latent = torch.tensor(scales[1], dtype=obs.dtype, device=obs.device)
        call_kwargs = dict(kwargs, _signature=_signature(args))
        with poutine.block(hide_types=["sample", "observe"]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.*")
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
            if (
                pyro.ops.jit._hashable_args_kwargs((obs, latent) + args, call_kwargs)
                not in fn.compiled
            ):
                # compiling runs the function three times; do it on a copy of the RNG so the
                # first compiled call draws the same numbers as the eager loss would
                with torch.random.fork_rng(
                    devices=[ref.device] if ref is not None and ref.is_cuda else []
                ):
                    fn(obs, latent, *args, **call_kwargs)
            return fn(obs, latent, *args, **call_kwargs)

    @torch.no_grad()
    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=getattr(self, "retain_graph", None))  # set by Pyro's ELBO
        return loss.item()


class CachedJitTrace_ELBO(_CachedJit, Trace_ELBO):  # noqa: N801 - Pyro's naming
    """``Trace_ELBO`` compiled with ``torch.jit.trace``, once per (model, guide, input shapes).

    Unlike pyro-ppl 1.9.2's ``JitTrace_ELBO``: works with bound methods (``vae.model``),
    re-traces for a new batch shape, and takes the scales of observed and latent sites
    (mini-batch N/B, KL weight) as inputs instead of freezing them at trace time.
    """

    def _tensor_loss(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        # Trace_ELBO.differentiable_loss calls .item(), which a trace would freeze; this is the
        # tensor-only version of Trace_ELBO._differentiable_loss_particle (as in JitTrace_ELBO).
        from pyro.infer.trace_elbo import _compute_log_r

        loss: Any = 0.0
        surrogate_loss: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle: Any = 0.0
            surrogate_particle: Any = 0.0
            log_r = None
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    elbo_particle = elbo_particle + site["log_prob_sum"]
                    surrogate_particle = surrogate_particle + site["log_prob_sum"]
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    _, score_function_term, entropy_term = site["score_parts"]
                    elbo_particle = elbo_particle - site["log_prob_sum"]
                    if not is_identically_zero(entropy_term):
                        surrogate_particle = surrogate_particle - entropy_term.sum()
                    if not is_identically_zero(score_function_term):
                        if log_r is None:
                            log_r = _compute_log_r(model_trace, guide_trace)
                        downstream = log_r.sum_to(site["cond_indep_stack"])
                        surrogate_particle = (
                            surrogate_particle + (downstream * score_function_term).sum()
                        )
            loss = loss - elbo_particle / self.num_particles
            surrogate_loss = surrogate_loss - surrogate_particle / self.num_particles
        return loss + (surrogate_loss - surrogate_loss.detach())


class CachedJitTraceMeanField_ELBO(_CachedJit, TraceMeanField_ELBO):  # noqa: N801 - Pyro's naming
    """``TraceMeanField_ELBO`` compiled with ``torch.jit.trace``, once per (model, guide, input shapes).

    pyro-ppl 1.9.2's ``JitTraceMeanField_ELBO`` tests ``_loss_and_surrogate_loss`` but stores
    ``_differentiable_loss``, so it re-traces on every call; this class does not, and handles
    scales and batch shapes as :class:`CachedJitTrace_ELBO` does.
    """

    def _tensor_loss(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        loss: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            _, loss_particle = self._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + loss_particle / self.num_particles
        return loss
