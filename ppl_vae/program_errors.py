r"""One line for an exception raised inside a user's Pyro program: where it was raised, what, and the fix.

Every entry point (``fit``, the inspection, the estimators, AIS/BDMC, the amortisation gap, the NUTS
reference, ``compare``) runs the user's ``model``/``guide``. An exception from inside them (a shape error
of their networks, Pyro's plate checks, a distribution refusing its parameters) becomes **one**
:class:`~ppl_vae.errors.ProgramError` line, the original chained (``raise ... from err``), naming

* the program and the **site** where it was raised: the run is repeated once under :class:`SiteTracker`,
  a messenger that records the last sample site entered and the last one completed, so the message says
  ``at sample site 'y'`` (raised while Pyro processed it) or ``after sample site 'z'`` (in the user's code
  between two sites);
* the user's own line (the innermost frame of the traceback outside torch, Pyro and ppl_vae);
* the error, Pyro's shape tables cut off (they run to dozens of lines);
* the specific fix for the causes that are known to break programs under a particle plate (:func:`known_fix`):
  boolean-mask indexing (score with ``.mask()``), a conditioning input joined to a latent with ``torch.cat``
  without ``expand``, ``BatchNorm1d`` given ``(..., N, C)``, a program that takes arguments the data do not give.

An exception whose traceback never passes through user code is a bug of ppl_vae and is not translated.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import site_is_subsample

from .errors import ProgramError, UserError

__all__ = [
    "SiteTracker",
    "from_program",
    "known_fix",
    "program_failure",
    "translated",
    "trim_message",
]

#: The longest error text kept in the one-line message (Pyro's shape tables are cut off before).
MAX_MESSAGE = 320

_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep
    for m in (torch, pyro, sys.modules[__name__.rpartition(".")[0]])
    if getattr(m, "__file__", None)
)
_PYRO_USER_DIRS = (
    os.path.join(os.path.dirname(os.path.abspath(pyro.__file__)), "contrib") + os.sep,
)
_STDLIB = os.path.dirname(os.path.abspath(contextlib.__file__)) + os.sep


class SiteTracker(Messenger):
    """Record the last sample site entered (``started``, None once it completed) and the last completed."""

    def __init__(self) -> None:
        super().__init__()
        self.started: str | None = None
        self.done: str | None = None

    def _process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and not site_is_subsample(msg):
            self.started = msg["name"]

    def _postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and not site_is_subsample(msg):
            self.done, self.started = msg["name"], None

    def where(self) -> str:
        if self.started is not None:
            return f"at sample site {self.started!r}"
        if self.done is not None:
            return f"after sample site {self.done!r} (in the code before the next site)"
        return "before its first sample site"


def _user_frame(filename: str) -> bool:
    path = os.path.abspath(filename)
    if path.startswith(_PYRO_USER_DIRS):  # pyro.contrib's models (CEVAE) are user programs here
        return True
    if path.startswith(_LIBRARY_DIRS) or filename.startswith("<"):
        return False
    installed = f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path
    return installed or not path.startswith(_STDLIB)


def user_line(err: BaseException) -> str | None:
    """``file.py:123 (the line)`` of the innermost traceback frame in user code, or None."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if _user_frame(f.filename)]
    if not frames:
        return None
    f = frames[-1]
    line = (f.line or "").strip()
    return f"{os.path.basename(f.filename)}:{f.lineno}" + (f" `{line[:80]}`" if line else "")


def from_user_code(err: BaseException) -> bool:
    """Whether the traceback passes through user code (else the exception is ppl_vae's own bug)."""
    return any(_user_frame(f.filename) for f in traceback.extract_tb(err.__traceback__))


def from_program(err: BaseException) -> bool:
    """Whether ``err`` is the user's program's to report: raised through user code, or while ppl_vae scored
    one of the program's sites (marked with the site's name); never a :class:`UserError` (already one line)."""
    if isinstance(err, UserError):
        return False
    return from_user_code(err) or getattr(err, "_ppl_vae_site", None) is not None


def trim_message(err: BaseException) -> str:
    """The error text on one line, without Pyro's shape tables, at most :data:`MAX_MESSAGE` characters."""
    kept = []
    for line in str(err).splitlines():
        stripped = line.strip()
        if stripped.startswith(("Trace Shapes", "Param Sites", "Sample Sites")):
            break
        if stripped:
            kept.append(stripped)
    text = " ".join(kept) or type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _in_traceback(err: BaseException, *names: str) -> bool:
    return any(
        any(n in f.name or n in os.path.basename(f.filename) for n in names)
        for f in traceback.extract_tb(err.__traceback__)
    )


def known_fix(err: BaseException) -> str | None:
    """The fix for the causes known to break Pyro programs under a particle plate, or None."""
    text = str(err)
    if "shape of the mask" in text or (
        isinstance(err, IndexError) and "mask" in text and "index" in text
    ):
        return (
            "Indexing with a boolean mask drops the leading particle dimension: score the selected values "
            "with the distribution's .mask(mask) and the whole observation (fill what the mask leaves out, "
            "e.g. torch.where(mask, y, 0)) instead of indexing them out"
        )
    if _in_traceback(err, "batch_norm", "batchnorm") or "running_mean should contain" in text:
        return (
            "BatchNorm1d reads a 3-D input (..., N, C) as (batch, channels, length): reshape to (-1, C) "
            "before it and back after, as Pyro's scanVI example does"
        )
    if "Tensors must have same number of dimensions" in text or (
        "Sizes of tensors must match except in dimension" in text
    ):
        return (
            "A latent with a leading particle dimension is joined to an input that has none: expand the "
            "input first, torch.cat([z, y.expand(*z.shape[:-1], -1)], -1)"
        )
    if isinstance(err, TypeError) and "positional argument" in text:
        return (
            "ppl_vae calls model(*batch) and guide(*batch) with the data's row-aligned tensors: pass every "
            "argument the programs take as a tensor of the data tuple, or wrap them, e.g. "
            "pv.Program(lambda x: m.model(x, None), lambda x: m.guide(x, None), owner=m)"
        )
    return None


def _locate(
    program: Any, batch: tuple[torch.Tensor, ...], context: Callable[[], Any]
) -> tuple[str, str] | None:
    """Run guide, then model replayed on it, under a :class:`SiteTracker`: ``(program part, site phrase)``
    of the first failure, or None when the run does not fail again."""
    tracker = SiteTracker()
    part = "guide"
    with torch.random.fork_rng(), torch.no_grad():
        try:
            with context(), tracker:
                guide_tr = poutine.trace(program.guide).get_trace(*batch)
            part, tracker = "model", SiteTracker()
            with context(), tracker:
                poutine.trace(poutine.replay(program.model, trace=guide_tr)).get_trace(*batch)
        except Exception:  # noqa: BLE001 - the failure being located
            return part, tracker.where()
    return None


def program_failure(
    err: BaseException,
    entry: str,
    program: Any = None,
    batch: tuple[torch.Tensor, ...] | None = None,
    context: Callable[[], Any] = contextlib.nullcontext,
    part: str | None = None,
    advice: str | None = None,
) -> ProgramError:
    """The one-line :class:`ProgramError` for ``err``, raised while ``entry`` ran the user's programs.

    ``program``/``batch``/``context`` (a factory of the context the failing run was in, e.g. a particle
    plate) let the run be repeated under a :class:`SiteTracker` to name the site; ``part`` ("model",
    "guide") says which program failed when the caller knows; ``advice`` is the fix given when no known
    cause (:func:`known_fix`) matches.
    """
    where = None
    if program is not None and batch is not None:
        found = _locate(program, batch, context)
        if found is not None:
            part, where = found
    if where is None:
        site = getattr(err, "_ppl_vae_site", None)
        where = f"at sample site {site!r}" if site else None
    place = ", ".join(p for p in (f"in the {part}" if part else None, where) if p)
    line = user_line(err)
    fix = known_fix(err) or advice
    return ProgramError(
        f"{entry}: the program raised {type(err).__name__}"
        + (f" {place}" if place else "")
        + (f" ({line})" if line else "")
        + f": {trim_message(err)}"
        + (f". Fix: {fix}" if fix else "")
    )


@contextlib.contextmanager
def translated(
    entry: str,
    program: Any = None,
    batch: tuple[torch.Tensor, ...] | None = None,
    context: Callable[[], Any] = contextlib.nullcontext,
) -> Iterator[None]:
    """Turn an exception from the user's programs inside the block into :func:`program_failure`'s line;
    ppl_vae's own errors (:class:`~ppl_vae.errors.UserError`) and bugs (no user frame) pass unchanged."""
    try:
        yield
    except Exception as err:
        if not from_program(err):
            raise
        raise program_failure(err, entry, program, batch, context) from err
