"""What a training run carries between epochs and between ``fit`` calls, returned to the user.

``fit`` returns a :class:`History` (a list of per-epoch records) whose ``.state`` is the
:class:`TrainState`: epoch and step counters, the optimiser, the trained values of plain
``pyro.param`` sites, the fast-path engine with its captured graphs, and what was validated. A
later ``fit`` call of the same program continues from it (``fit(..., state=history.state)``, or
implicitly: the state is remembered per program, weakly, never as an attribute of the user's object).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..errors import UserError

__all__ = ["History", "TrainState", "epoch_seed", "resolve_device", "state_of", "training_summary"]


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
    engine: Any = field(default=None, repr=False)
    validated: dict[str, Any] = field(default_factory=dict, repr=False)
    info: Any = field(default=None, repr=False)  # the ProgramInfo of the last inspection
    setup: Any = field(
        default=None, repr=False
    )  # (key, info, bound objective, params, plain params) of the last call
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


_STATES: weakref.WeakKeyDictionary[Any, TrainState] = weakref.WeakKeyDictionary()


def state_of(key: Any) -> TrainState | None:
    """The training state ``fit`` remembers for a program (by the program's key), or None."""
    try:
        return _STATES.get(key)
    except TypeError:
        return None


def remember(key: Any, state: TrainState) -> None:
    try:
        _STATES[key] = state
    except TypeError:  # an object that cannot be weakly referenced: pass state= to continue
        pass


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
