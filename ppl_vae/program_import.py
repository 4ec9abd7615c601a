"""A user's own program named by a dotted path, for run folders: ``ppl-vae train --program my_module:MyVAE``.

``"package.module:Name"`` names a class or a factory; it is imported (the current folder first on the
path, as ``python -m`` has it) and called with the keyword arguments of ``--program-args`` (JSON), and must
return a program: an object with Pyro ``.model``/``.guide`` or a :class:`~ppl_vae.programs.Program`.

:class:`ImportedProgram` wraps it as the one ``nn.Module`` a run folder saves: its ``config`` records the
path and the arguments (``{"class": "ImportedProgram", "program": ..., "program_args": {...}}``), so that a
checkpoint, ``--resume`` and ``ppl-vae evaluate`` rebuild the same program and load its weights; its
``model``/``guide`` are the program's own (the user's object is not changed: nothing is stored on it), and
the program contract's hooks (``dataset_inputs``, ``check_data``, ``epoch_metrics``, ``accuracy``) are the
program owner's. Import errors, a missing attribute or a factory that fails are one line naming them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from typing import Any

import torch
from torch import nn

from .errors import ProgramError, UserError
from .models.registry import register_model
from .programs import Program, as_program

__all__ = [
    "HOOKS",
    "ImportedProgram",
    "check_program_args",
    "check_program_spec",
    "load_program",
]

#: The program contract's optional hooks, read from the imported program's owner.
HOOKS = ("dataset_inputs", "check_data", "epoch_metrics", "accuracy")
_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def check_program_spec(spec: Any) -> str:
    """``"module:Name"`` (dotted module path, colon, attribute path), or a one-line refusal."""
    if not isinstance(spec, str) or not _SPEC.match(spec.strip()):
        raise UserError(
            f"--program must name a class or factory as module:Name (e.g. my_vaes:ConvVAE or "
            f"pkg.models:make_vae); got {spec!r}"
        )
    return spec.strip()


def check_program_args(args: Any) -> dict[str, Any]:
    """The keyword arguments of ``--program``: a dict (or its JSON), JSON-able (it is recorded)."""
    if args is None:
        return {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as err:
            raise UserError(f"--program-args must be a JSON object; {err} in {args!r}") from None
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise UserError(
            f"--program-args must be a JSON object of keyword arguments, e.g. '{{\"z_dim\": 4}}'; got {args!r}"
        )
    try:
        json.dumps(args)
    except TypeError as err:
        raise UserError(f"--program-args must be JSON-able (it is recorded): {err}") from None
    return dict(args)


def _attribute(spec: str) -> Any:
    module_name, _, path = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise UserError(
                f"--program {spec}: no module named {err.name!r} (looked in the current folder {cwd} and "
                "on the Python path): check the spelling, or run from the folder that holds it"
            ) from None
        raise ProgramError(
            f"--program {spec}: importing {module_name!r} failed: {type(err).__name__}: {err}"
        ) from err
    except Exception as err:  # noqa: BLE001 - the user's module: one line, chained
        raise ProgramError(
            f"--program {spec}: importing {module_name!r} failed: {type(err).__name__}: {err}"
        ) from err
    for part in path.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise UserError(
                f"--program {spec}: {getattr(obj, '__name__', module_name)!r} has no attribute {part!r} "
                f"(it has {', '.join(public)}{', ...' if len(public) == 12 else ''})"
            )
        obj = getattr(obj, part)
    return obj


def load_program(spec: str, args: dict[str, Any] | None = None) -> Any:
    """Import ``spec`` (``"module:Name"``) and call it with ``args``: the program it returns."""
    spec, args = check_program_spec(spec), check_program_args(args)
    factory = _attribute(spec)
    if not callable(factory):
        raise UserError(f"--program {spec}: {type(factory).__name__} is not a class or factory")
    try:
        built = factory(**args)
    except Exception as err:  # noqa: BLE001 - the user's constructor: one line, chained
        raise ProgramError(
            f"--program {spec}: calling it with {args} failed: {type(err).__name__}: {err}"
        ) from err
    try:
        as_program(built)
    except UserError:
        raise ProgramError(
            f"--program {spec} returned a {type(built).__name__}, not a program: return an object with "
            "Pyro .model and .guide methods, or pv.Program(model, guide)"
        ) from None
    return built


@register_model
class ImportedProgram(nn.Module):
    """A program named by ``"module:Name"`` and its arguments, as a module a run folder saves and rebuilds.

    Args:
        program: the dotted path (``"my_module:MyVAE"``).
        program_args: keyword arguments of the class or factory (JSON-able; recorded).
    """

    def __init__(self, program: str, program_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.spec, self.args = check_program_spec(program), check_program_args(program_args)
        built = load_program(self.spec, self.args)
        target = as_program(built)
        # held, not registered: the weights are registered once, under "program" or "nets"
        self.__dict__["_target"] = target
        self.__dict__["_owner"] = target.owner if isinstance(built, Program) else built
        if isinstance(built, nn.Module):
            self.program = built
        else:  # a plain object or free functions: the modules it belongs to
            self.nets = nn.ModuleList(target.modules)

    @property
    def config(self) -> dict[str, Any]:
        return {"class": "ImportedProgram", "program": self.spec, "program_args": dict(self.args)}

    def model(self, *args: Any, **kwargs: Any) -> Any:
        return self._target.model(*args, **kwargs)

    def guide(self, *args: Any, **kwargs: Any) -> Any:
        return self._target.guide(*args, **kwargs)

    def reinit(self, seed: int) -> ImportedProgram:
        """The starting weights of seed ``seed``: the program built again under ``torch.manual_seed(seed)``
        (its own initialisation, which resetting each layer would overwrite)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            fresh = ImportedProgram(self.spec, self.args)
        self.load_state_dict(fresh.state_dict())
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            owner = self.__dict__.get("_owner")
            if name in HOOKS and owner is not None and hasattr(owner, name):
                return getattr(owner, name)
            raise
