"""Global latents and per-point estimates: evaluate conditionally on plug-in values of the globals.

A global latent (a Bayesian decoder weight, a shared bias: a latent site outside the data plate) ties all
data points together, so log p(x) does not split into one value per point and the estimators refuse it.
:func:`fix_globals` gives the program whose per-point values are ``log p(x_n | theta)`` at fixed ``theta``.
"""

from __future__ import annotations

from typing import Any

import pyro.poutine as poutine
import torch

from ..errors import ProgramError
from ..params import param_scope
from ..program_inspection import inspect_program
from ..programs import INSPECT_ROWS, Program, as_program, as_rows, rows_slice

__all__ = ["fix_globals", "per_point_program"]


def fix_globals(
    program: Any,
    data: Any,
    values: dict[str, torch.Tensor] | None = None,
    *,
    data_plate: str | None = None,
) -> Program:
    """The program with its global latent sites fixed at plug-in values: per-point estimates become
    ``log p(x_n | theta)`` with ``theta`` those values.

    The model is conditioned on ``values`` and the sites hidden from its trace (their prior term, one
    number for the whole data set, is not a per-point quantity); the guide samples the other sites
    given the same values, with the global sites hidden too.

    Args:
        program: an object with ``.model``/``.guide`` or a :class:`Program`.
        data: data the guide can be run on (its first rows are used to read the guide's global sites).
        values: ``{site: value}``; default: the mean of the guide's distribution at each global site
            (or one draw where the family has no closed-form mean).
        data_plate: the data plate's name (default: the program's, else ``"data"``).

    Examples:
        >>> import pyro
        >>> import pyro.distributions as dist
        >>> import torch
        >>> import ppl_vae as pv
        >>> def model(x):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))  # a global latent
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(mu, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     pyro.sample("mu", dist.Normal(0.5, 0.1))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(x / 2, 0.7))
        >>> x = torch.zeros(3)
        >>> fixed = pv.fix_globals(pv.Program(model, guide), x)  # mu at its guide mean, 0.5
        >>> pv.iw_log_likelihood(fixed, x, num_samples=100, seed=0).shape
        torch.Size([3])
    """
    program = as_program(program, data_plate=data_plate)
    rows = as_rows(data, "data")
    with param_scope(program), torch.random.fork_rng(), torch.no_grad():
        info = inspect_program(program, rows)
        names = list(info.global_latent)
        if not names:
            raise ProgramError(
                f"the program has no global latent sites (every latent is inside the data plate "
                f"{info.data_plate!r}); it needs no fix_globals"
            )
        if values is None:
            first = rows_slice(rows, slice(0, INSPECT_ROWS))
            guide_tr = poutine.trace(program.guide).get_trace(*first)
            values = {}
            for name in names:
                fn = guide_tr.nodes[name]["fn"]
                try:
                    values[name] = fn.mean.detach()
                except NotImplementedError:
                    values[name] = guide_tr.nodes[name]["value"].detach()
    unknown = sorted(set(values) - set(names))
    if unknown or set(names) - set(values):
        raise ProgramError(
            f"values must name exactly the global latent sites {sorted(names)}; got {sorted(values)}"
        )
    model = poutine.block(poutine.condition(program.model, data=values), hide=names)
    guide = poutine.block(poutine.condition(program.guide, data=values), hide=names)
    return Program(model, guide, program.data_plate, program.owner, identity=program.key)


def per_point_program(
    program: Any, data: Any, *, data_plate: str | None = None
) -> tuple[Any, list[str]]:
    """``(program, [])`` when every latent is inside the data plate, else ``(fix_globals(program, data),
    names of the global sites)``: what a per-point comparison of programs scores (``compare``)."""
    prog = as_program(program, data_plate=data_plate)
    with param_scope(prog), torch.random.fork_rng(), torch.no_grad():
        names = sorted(inspect_program(prog, as_rows(data, "data")).global_latent)
    return (fix_globals(program, data, data_plate=data_plate), names) if names else (program, [])
