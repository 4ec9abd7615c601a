r"""What the program contract reads from the sites of a trace, beyond their names: scales, supports, order,
the plate that holds the data, and the modules whose mode must be fixed while a program is evaluated.

**Scales** (:class:`PerPointScale`). A user's ``poutine.scale`` is part of *their training objective* (Pyro's
scanVI scales model and guide by ``1 / (batch * genes)``, SS-VAE's auxiliary loss by 46, KL annealing by a
factor), never of the likelihood: per-point ``log p(x)`` is computed from unscaled log-densities,

.. math::

    \log w_k = \sum_{s \in \text{model}} \log p_s - \sum_{s \in \text{guide}} \log q_s
    \quad\text{(every site's scale set to 1, its mask kept)},

whatever scales the program, ``fit`` (N/|B|, a beta, an annealing weight) or a subsampling plate applied. A
tensor scale that is 0 or one constant elsewhere (``poutine.scale(scale=z_pres)`` in old AIR code) acts as a
mask and is kept as one; any other tensor scale (per-point weights) is refused, naming the site.
:func:`user_scales` lists the scales a program applies itself, so ``fit`` can say its history is scaled.

**Support** (:func:`support_shares`). Pyro's examples score grey levels with ``Bernoulli(...,
validate_args=False)``; the share of observed values outside each observation's support is measured even
when validation is off, so a "log-likelihood" of such values is never reported without a word.

**Order** (:func:`same_latent_order`). A closed-form KL per site (``TraceMeanField_ELBO``) is the ELBO only
when the guide samples the latents in the model's order; Pyro checks this and warns, the estimators do too.

**The data plate** (:func:`enclosing_plates`): when no plate has the data plate's name, the plates that
enclose every observed site are the candidates.

**Modes** (:func:`eval_mode`): BatchNorm and Dropout in training mode make a point's value depend on the
other points of its chunk; the estimators run the modules in eval mode and restore every submodule's mode.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from .errors import ProgramError

__all__ = [
    "PerPointScale",
    "ProgramWarning",
    "enclosing_plates",
    "eval_mode",
    "program_modules",
    "restored_modes",
    "say_once",
    "same_latent_order",
    "support_shares",
    "user_scales",
]


class ProgramWarning(UserWarning):
    """ppl_vae read a program in a way its author should know about: a data plate found by what encloses
    the observed sites, a scale kept in a training objective, observations outside a likelihood's support,
    a closed-form KL replaced by a sampled one because the guide's order breaks the mean-field restriction."""


_SAID: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def say_once(key: Any, message: str, stacklevel: int = 3) -> None:
    """Warn ``message`` (a :class:`ProgramWarning`) once per program (``key``: its owner or model function,
    held weakly); every time for a key that cannot be held weakly."""
    try:
        said = _SAID.setdefault(key, set())
    except TypeError:
        said = set()
    if message in said:
        return
    said.add(message)
    warnings.warn(message, ProgramWarning, stacklevel=stacklevel + 1)


def _scale_mask(scale: torch.Tensor, name: str) -> torch.Tensor:
    """A tensor scale that is 0 or one constant elsewhere, as the mask it is; anything else refused."""
    keep = scale != 0
    if bool((scale < 0).any()) or not bool((~keep | (scale == scale.amax())).all()):
        raise ProgramError(
            f"site {name!r} is scaled by a tensor that takes several values (poutine.scale(scale=tensor)): "
            "per-point log p(x) needs unscaled log-densities, and per-point weights have no per-point "
            "meaning; to drop terms, mask them (dist.mask(bool tensor) or poutine.mask(mask=...))"
        )
    return keep


class PerPointScale(Messenger):
    """Per-point log-densities: every sample site's scale set to 1, whatever scaled it (the user's
    ``poutine.scale``, ``fit``'s N/|B| and KL weight, a subsampling plate); a 0/constant tensor scale kept
    as the mask it is (see the module docstring). Enter it outside the programs (it runs after their
    messengers). Sites are never re-traced: the estimators' one trace per chunk is enough."""

    def _process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or site_is_subsample(msg):
            return
        scale = msg["scale"]
        if isinstance(scale, torch.Tensor) and scale.numel() > 1:
            keep = _scale_mask(scale, str(msg["name"]))
            mask = msg["mask"]
            msg["mask"] = keep if mask is None or mask is True else keep & mask
        msg["scale"] = 1.0


def _data_factor(site: dict, plate: str) -> float:
    """The factor the data plate's own subsampling put on a site (full size / batch size), else 1."""
    for f in site["cond_indep_stack"]:
        if f.name == plate and f.full_size not in (None, -1) and f.size not in (-1, 0):
            return f.full_size / f.size
    return 1.0


def user_scales(sites: dict[str, dict], plate: str) -> tuple[tuple[str, float | str], ...]:
    """``(site, scale)`` for every site the program itself scales (its own ``poutine.scale``), the data plate's
    subsample factor taken out; ``"tensor"`` for a tensor scale that varies."""
    out: list[tuple[str, float | str]] = []
    for name, site in sites.items():
        scale = site["scale"]
        if isinstance(scale, torch.Tensor):
            if scale.numel() > 1 and not bool((scale == scale.flatten()[0]).all()):
                out.append((name, "tensor"))
                continue
            scale = float(scale.flatten()[0])
        value = float(scale) / _data_factor(site, plate)
        if abs(value - 1.0) > 1e-9:
            out.append((name, value))
    return tuple(out)


def _base_support(fn: Any) -> Any:
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def support_shares(
    sites: dict[str, dict], names: tuple[str, ...] | list[str]
) -> dict[str, tuple[int, int]]:
    """``{site: (values outside the support, values checked)}`` for the observed sites ``names`` (masked
    values not counted); sites on the real line are skipped (nothing to check)."""
    out = {}
    for name in names:
        site = sites[name]
        value, fn = site["value"], site["fn"]
        try:
            support = _base_support(fn)
        except NotImplementedError:
            continue
        if support is constraints.real or not isinstance(value, torch.Tensor):
            continue
        ok = support.check(value)
        mask = site.get("mask")
        if isinstance(mask, torch.Tensor):
            try:
                mask = mask.reshape(mask.shape + (1,) * (ok.dim() - mask.dim())).expand_as(ok)
            except RuntimeError:
                mask = None
        if isinstance(mask, torch.Tensor):
            out[name] = (int((~ok & mask).sum()), int(mask.sum()))
        else:
            out[name] = (int((~ok).sum()), ok.numel())
    return out


def same_latent_order(model_tr: Any, guide_tr: Any, latent: tuple[str, ...]) -> bool:
    """Whether model and guide sample the latent sites in the same order (Pyro's mean-field check)."""
    wanted = set(latent)
    order_p = [n for n in model_tr.nodes if n in wanted]
    order_q = [n for n in guide_tr.nodes if n in wanted]
    return order_p == order_q


def enclosing_plates(sites: dict[str, dict], observed: list[str]) -> list[str]:
    """Names of the vectorised plates that enclose every observed site (outermost first)."""
    common: list[str] | None = None
    for name in observed:
        frames = [f for f in sites[name]["cond_indep_stack"] if f.vectorized]
        names = [f.name for f in sorted(frames, key=lambda f: f.dim)]
        common = names if common is None else [n for n in common if n in names]
    return common or []


def program_modules(owner: Any, *programs: Any) -> list[torch.nn.Module]:
    """The ``nn.Module`` s a program belongs to: its owner if a module, else the modules among the owner's
    attributes (Pyro's ``vae_comparison.py`` keeps its networks on a plain object), and model/guide that
    are modules themselves (``pyro.contrib.cevae``)."""
    found: list[torch.nn.Module] = []
    if isinstance(owner, torch.nn.Module):
        found.append(owner)
    elif owner is not None:
        found.extend(v for v in vars(owner).values() if isinstance(v, torch.nn.Module))
    found.extend(p for p in programs if isinstance(p, torch.nn.Module))
    return list({id(m): m for m in found}.values())


@contextlib.contextmanager
def restored_modes(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Whatever the block does to the modules' train/eval modes, every submodule's mode is restored after."""
    saved = [(m, m.training) for root in modules for m in root.modules()]
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode


@contextlib.contextmanager
def eval_mode(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Every submodule of ``modules`` in eval mode inside the block; each one's own mode restored after.

    A ``BatchNorm1d`` given a 3-D input ``(A, B, C)`` with ``B == C ==`` its feature count is said once: that
    is how a particle-expanded ``(K, N, C)`` batch of N == C rows looks, which BatchNorm1d reads as (batch,
    channels, length) and normalises over the rows without an error (with N != C it fails, and the failure
    is explained by :mod:`ppl_vae.program_errors`)."""
    saved = [(m, m.training) for root in modules for m in root.modules()]
    norms = {
        name: m
        for root in modules
        for name, m in root.named_modules()
        if isinstance(m, torch.nn.BatchNorm1d)
    }
    handles = [m.register_forward_pre_hook(_batchnorm_check(name)) for name, m in norms.items()]
    try:
        for root in modules:
            root.eval()
        yield
    finally:
        for h in handles:
            h.remove()
        for m, mode in saved:
            m.training = mode


def _batchnorm_check(name: str) -> Any:
    said: list[bool] = []

    def check(module: torch.nn.BatchNorm1d, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if said or not isinstance(x, torch.Tensor) or x.dim() != 3:
            return
        if x.shape[1] == x.shape[2] == module.num_features:
            said.append(True)
            warnings.warn(
                f"BatchNorm1d {name or '(the module)'!r} was given a 3-D input {tuple(x.shape)}: it reads it "
                "as (batch, channels, length), so a particle-expanded (K, N, C) batch whose N rows equal its C "
                "features is normalised over the rows, silently; if the leading dimension is the particles', "
                "reshape to (-1, C) before it and back after",
                ProgramWarning,
                stacklevel=2,
            )

    return check
