"""The parameters a program registers: kept per program after ``fit``, seen by every later call.

``fit`` trains every parameter the programs register (``pyro.module``'s and plain ``pyro.param`` sites,
the latter through their unconstrained values) inside a scoped Pyro parameter store, so nothing leaks
into (or is read from) the global one and two models live in one process. The trained values of the
plain ``pyro.param`` sites are remembered per program (weakly, by :attr:`Program.key`: the owner
object, or the model function), and :func:`param_scope` puts them back for every later call given the
same program (the estimators, ``evaluate``, the posterior tools), so a free-function program's
parameters are reachable after training; module parameters live on their modules.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from pyro.params.param_store import StateDict

from .programs import Program, ProgramLike, PyroFn, as_program

__all__ = ["param_scope", "pure_params", "trained_params", "trained_state"]

_MODULE_DIVIDER = "$$$"  # pyro.module's "name$$$param"


#: The trained plain ``pyro.param`` values ``fit`` left for each program, by its key: weak keys (the
#: values do not refer to the program, so an entry goes with it); keys that cannot be weakly referenced
#: (rare) in a bounded table of the last 8.
_TRAINED: weakref.WeakKeyDictionary[Any, StateDict] = weakref.WeakKeyDictionary()
_TRAINED_STRONG: OrderedDict[int, tuple[Any, StateDict]] = OrderedDict()
_STRONG_SIZE = 8


def _remember(program: Program, state: StateDict) -> None:
    key = program.key
    try:
        _TRAINED[key] = state
    except TypeError:
        _TRAINED_STRONG[id(key)] = (key, state)
        _TRAINED_STRONG.move_to_end(id(key))
        while len(_TRAINED_STRONG) > _STRONG_SIZE:
            _TRAINED_STRONG.popitem(last=False)


def trained_state(program: Program) -> StateDict | None:
    """The param-store state (plain ``pyro.param`` values) ``fit`` left for this program, or None."""
    key = program.key
    try:
        return _TRAINED.get(key)
    except TypeError:
        entry = _TRAINED_STRONG.get(id(key))
        return entry[1] if entry is not None and entry[0] is key else None


def trained_params(program: ProgramLike, guide: PyroFn | None = None) -> dict[str, torch.Tensor]:
    """The trained values (constrained) of the plain ``pyro.param`` sites of a program, by name.

    Examples:
        >>> import pyro
        >>> import pyro.distributions as dist
        >>> import torch
        >>> import ppl_vae as pv
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.zeros(1))
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        ...         pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Normal(0.8 * x, 0.45).to_event(1))
        >>> program = pv.Program(model, guide)
        >>> x = torch.full((64, 1), 1.5)
        >>> _ = pv.fit(program, x, "analytic", epochs=20, lr=0.05, progress=False)
        >>> sorted(pv.trained_params(program)), pv.trained_params(program)["loc"].shape
        (['loc'], torch.Size([1]))
    """
    state = trained_state(as_program(program, guide))
    if not state:
        return {}
    with pyro.get_param_store().scope(pure_params(state)):
        store = pyro.get_param_store()
        return {name: store[name].detach() for name in state["params"]}


def pure_params(state: StateDict | dict[str, Any]) -> StateDict:
    """A copy of a param-store state without ``pyro.module``'s entries (they live on the modules)."""
    keep = [n for n in state["params"] if _MODULE_DIVIDER not in n]
    return StateDict(
        params={n: state["params"][n] for n in keep},
        constraints={n: state["constraints"][n] for n in keep if n in state["constraints"]},
    )


@contextlib.contextmanager
def param_scope(
    program: Program,
    state: dict[str, Any] | None = None,
    *,
    keep: bool = False,
    fresh_modules: bool = False,
) -> Iterator[StateDict]:
    """Run inside a parameter store holding the program's parameters.

    ``state``: a training state's param-store state (plain ``pyro.param`` values and the modules'
    registrations); by default what :func:`trained_state` remembers for the program (plain values
    only), else the caller's current store (so a user's own ``pyro.param`` values are seen). With
    ``fresh_modules`` the modules' earlier registrations are dropped (they re-register when the
    programs run: a replaced submodule is never shadowed by a stale entry). What the programs register
    inside is dropped on exit, unless ``keep=True``: then the store's state is written back into
    ``state`` and its plain values remembered for the program.
    """
    store = pyro.get_param_store()
    if state is None:
        remembered = trained_state(program)
        start = pure_params(remembered) if remembered is not None else store.get_state()
    else:
        start = (
            pure_params(state)
            if fresh_modules
            else StateDict(params=dict(state["params"]), constraints=dict(state["constraints"]))
        )
    with store.scope(start) as scoped:
        yield scoped
        if keep:
            final = store.get_state()
            target = state if state is not None else {}
            target.clear()
            target.update(final)
            _remember(program, pure_params(final))
