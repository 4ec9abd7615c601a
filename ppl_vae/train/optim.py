"""The optimiser and what it trains: every parameter the programs register.

:func:`collect_parameters` runs inside the training's parameter store after the programs have
been traced once, and returns the leaf tensors to optimise: the parameters of every module
registered with ``pyro.module`` (the modules' own ``nn.Parameter`` s, so a trained module is
used as it is afterwards) and the *unconstrained* tensors of every plain ``pyro.param`` site (so a
``constraints.positive`` scale is optimised on the log scale, as Pyro's SVI does).
"""

from __future__ import annotations

import warnings

import pyro
import torch

__all__ = ["FUSED_ADAM_MIN_CPU", "adam", "collect_parameters", "unregistered_parameters"]

#: Adam is fused on the CPU only for models with at least this many parameters.
FUSED_ADAM_MIN_CPU = 1 << 17


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch and device support it and it pays.

    On the CPU the fused kernel always opens an OpenMP parallel region; for a small model
    (under ``FUSED_ADAM_MIN_CPU`` parameters) that costs more than it saves, and on a busy
    machine the region waits for a descheduled thread (tens of milliseconds per step), while the
    plain implementation's small element-wise ops stay on one thread.
    """
    if (
        all(p.device.type == "cpu" for p in params)
        and sum(p.numel() for p in params) < FUSED_ADAM_MIN_CPU
    ):
        return torch.optim.Adam(params, lr=lr)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def collect_parameters() -> list[tuple[str, torch.Tensor]]:
    """``(name, leaf tensor)`` of every parameter in the current (scoped) param store, in order."""
    seen: set[int] = set()
    out = []
    for name, value in pyro.get_param_store().named_parameters():
        if id(value) not in seen and value.requires_grad:
            seen.add(id(value))
            out.append((name, value))
    return out


def unregistered_parameters(
    module: torch.nn.Module | None, trained: list[torch.Tensor]
) -> list[str]:
    """Names of ``module``'s trainable parameters that the programs never registered (so no ELBO
    gradient reaches them); the caller warns about them once."""
    if module is None:
        return []
    ids = {id(t) for t in trained}
    return [name for name, p in module.named_parameters() if p.requires_grad and id(p) not in ids]


def warn_unregistered(names: list[str], owner: str) -> None:
    if names:
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
        warnings.warn(
            f"ppl_vae.fit: parameters of {owner} that the model/guide never register with pyro.module are "
            f"not trained: {shown}. Register the submodule (pyro.module('name', self.net)) in the program "
            "that uses it",
            UserWarning,
            stacklevel=4,
        )
