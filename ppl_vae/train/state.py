"""What a training run carries between epochs and between ``fit`` calls, returned to the user.

``fit`` returns a :class:`History` (a list of per-epoch records) whose ``.state`` is the
:class:`TrainState`: epoch and step counters, the optimiser, the trained values of plain
``pyro.param`` sites, the fast-path engine with its captured graphs, and what was validated. A
later ``fit`` call of the same program continues from it (``fit(..., state=history.state)``, or
implicitly: :func:`state_of`).

**The one memory of programs.** ``fit`` remembers the state of the last :data:`STATE_CACHE_SIZE` programs
it trained, by the program's key (the model object, never an attribute of it), oldest dropped first. The
states are held strongly and the cache is bounded: a state refers to its program (the engine, the
inspection), so a weak-keyed map would keep every trained program, its optimiser and its compiled graphs
alive for the whole process. A ``fit`` call of a program whose state was dropped says so once and starts
a new state (pass ``state=history.state`` to continue exactly).
"""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from ..errors import UserError

if TYPE_CHECKING:
    from ..programs import ProgramInfo
    from .fast import FastEngine

__all__ = [
    "STATE_CACHE_SIZE",
    "History",
    "TrainState",
    "epoch_seed",
    "resolve_device",
    "state_of",
    "training_summary",
]


class History(list):
    """Per-epoch records (dicts with ``epoch``, ``step``, ``train_elbo``, ``test_elbo``, ``seconds``, ...).

    Attributes:
        state: the :class:`TrainState` of the ``fit`` call that returned it.
        meta: what the call decided and why (``fast_path``: the path that ran and, where the fast path
            did not apply, the reason; ``objective``; ``discrete_sites``).
    """

    state: Any = None
    meta: dict[str, Any]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.meta = {}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self))

    @property
    def final_test_elbo(self) -> float | None:
        return self[-1].get("test_elbo") if self else None


@dataclass
class TrainState:
    """Everything one training run keeps between epochs and calls (see the module docstring)."""

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    optimizer: torch.optim.Optimizer | None = None
    objective: str | None = None
    seed: int = 0
    params: dict[str, Any] = field(default_factory=lambda: {"params": {}, "constraints": {}})
    engine: FastEngine | None = field(default=None, repr=False)
    validated: dict[str, Any] = field(default_factory=dict, repr=False)
    info: ProgramInfo | None = field(default=None, repr=False)  # the last inspection
    #: (key, info, bound objective, params, plain params) of the last call
    setup: tuple[Any, ...] | None = field(default=None, repr=False)
    reported: set[str] = field(default_factory=set, repr=False)  # reasons already warned about

    @property
    def trained_params(self) -> dict[str, torch.Tensor]:
        """The trained plain ``pyro.param`` values (constrained), by name."""
        import pyro

        from ..params import pure_params

        plain = pure_params(self.params)
        with pyro.get_param_store().scope(plain):
            store = pyro.get_param_store()
            return {name: store[name].detach() for name in plain["params"]}


#: How many programs' training states ``fit`` remembers (see the module docstring).
STATE_CACHE_SIZE = 8
_STATES: OrderedDict[int, tuple[Any, TrainState]] = OrderedDict()  # id(key) -> (key, state)
_DROPPED: weakref.WeakSet[Any] = weakref.WeakSet()  # keys whose state was dropped (to say so)


def state_of(key: Any) -> TrainState | None:
    """The training state ``fit`` remembers for a program (by the program's key), or None."""
    entry = _STATES.get(id(key))
    if entry is None or entry[0] is not key:
        return None
    _STATES.move_to_end(id(key))
    return entry[1]


def remember(key: Any, state: TrainState) -> None:
    """Remember ``state`` for the program ``key`` (the most recent; the oldest beyond the bound go)."""
    _STATES[id(key)] = (key, state)
    _STATES.move_to_end(id(key))
    while len(_STATES) > STATE_CACHE_SIZE:
        dropped, _ = _STATES.popitem(last=False)[1]
        try:
            _DROPPED.add(dropped)
        except TypeError:  # cannot be weakly referenced: nothing to say later
            pass


def was_dropped(key: Any) -> bool:
    """Whether ``fit`` trained this program before and its state has left the cache since."""
    try:
        return key in _DROPPED and state_of(key) is None
    except TypeError:
        return False


def new_state(key: Any, seed: int) -> TrainState:
    """A fresh training state for the program ``key``, saying once when an earlier one was dropped."""
    if was_dropped(key):
        _DROPPED.discard(key)
        warnings.warn(
            f"ppl_vae.fit: the training state of this {type(key).__name__} (optimiser, step counter, "
            f"compiled graphs) left the cache of the last {STATE_CACHE_SIZE} programs trained; training "
            "continues with a new one. Pass state=history.state to continue a run exactly",
            UserWarning,
            stacklevel=3,
        )
    return TrainState(seed=seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling, binarisation and samples, from the run's seed."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919) % (2**63 - 1)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise UserError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device={device!r} was asked for, but torch sees no CUDA device: use device='cpu' or 'auto'"
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}"
        ) from None


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
