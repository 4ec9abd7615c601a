"""The one module that names torch's and Pyro's non-public APIs; everything else uses public ones.

Each use below states what ppl_vae relies on, is pinned by a test (``tests/test_torch_compat.py``), and
has a fallback that keeps results correct when a release changes it (the fast path is then slower or
off, and says why). The ranges of torch and pyro-ppl this was tested with are declared in
``pyproject.toml``; ``tests/test_torch_compat.py`` also checks that no other module of the package
names a private torch or Pyro attribute.

================================  ===========================================  ============================
what                              relied on                                    fallback
================================  ===========================================  ============================
:func:`capture`                   ``make_fx(..., tracing_mode="fake",           :class:`CaptureUnavailable`:
(``torch.fx.experimental``)       _allow_non_fake_inputs=True)`` records the    the callers run eagerly and
                                  ATen ops of a Python function (Pyro's         report the reason
                                  messengers included) on fake inputs, with
                                  real tensors it reads (constants) allowed
:func:`pyro_handler_stack`        ``pyro.poutine.runtime._PYRO_STACK``: the     ``None``: the JIT objectives
                                  active messengers, outermost first            treat the scales as unknown
                                                                                and run uncompiled
:func:`tensor_edits`            ``Tensor._version`` is bumped by every        a fresh object: never equal,
                                  in-place edit                                 so data are checked again
:func:`compile_step`              ``torch._inductor.compile(graph, example)``   :func:`compile_graph`
(the compiled whole step)         inside a ``torch._guards.tracing`` context    (``torch.compile``): the
                                  with a ``FakeTensorMode`` and shape env:      same code, a guard check
                                  Inductor on a captured graph with no Dynamo   and wrapper per call (3%
                                  frame (nothing to guard, nothing recompiles)  slower on bench_svi's VAE)
================================  ===========================================  ============================

Everything else compiles with public API only (:func:`compile_graph`: ``torch.compile`` with the
documented Inductor option ``fallback_random``, so compiled code draws PyTorch's own random numbers).
"""

from __future__ import annotations

import getpass
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "CaptureUnavailable",
    "capture",
    "compile_graph",
    "compile_step",
    "inductor_cache_dir",
    "pyro_handler_stack",
    "tensor_edits",
]


class CaptureUnavailable(RuntimeError):
    """This torch cannot capture a Python function as an ATen graph the way ppl_vae relies on."""


def capture(fn: Callable[..., Any], *example: Any) -> torch.fx.GraphModule:
    """``fn`` run once on fake copies of ``example``, recorded as a graph of ATen operations.

    Python control flow and Pyro's messengers run normally and leave no trace in the graph; tensors
    ``fn`` reads that are not inputs (``example`` may nest tensors in lists and tuples) (module constants, Pyro's own scalars) are kept as real constants
    (``_allow_non_fake_inputs``). Dead code (e.g. a plate's unused index tensor) is removed.

    Raises :class:`CaptureUnavailable` when this torch lacks the tracer or the keyword; whatever ``fn``
    itself raises (data-dependent Python, an unsupported op) passes through.
    """
    try:
        from torch.fx.experimental.proxy_tensor import make_fx
    except ImportError as err:  # pragma: no cover - torch without the tracer
        raise CaptureUnavailable(f"torch {torch.__version__} has no make_fx ({err})") from None
    try:
        traced = make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)
    except TypeError as err:  # pragma: no cover - the keyword renamed or removed
        raise CaptureUnavailable(
            f"torch {torch.__version__}: make_fx does not take _allow_non_fake_inputs ({err})"
        ) from None
    graph = traced(*example)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


def inductor_cache_dir() -> str:
    """The directory Inductor caches compiled code in: ``TORCHINDUCTOR_CACHE_DIR`` where the user set
    it, else one per user and login session (``<tmp>/ppl_vae_inductor_<user>_<session id>``, set in
    the environment), so parallel sessions of one user never write one cache at once (torch's default,
    one directory per user, was seen corrupted that way); processes of one session share it."""
    name = "TORCHINDUCTOR_CACHE_DIR"
    if not os.environ.get(name):
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # pragma: no cover - no user name: the numeric id
            user = str(os.getuid())
        session = os.getsid(0)
        os.environ[name] = os.path.join(tempfile.gettempdir(), f"ppl_vae_inductor_{user}_{session}")
    return os.environ[name]


def compile_graph(graph: torch.fx.GraphModule | Callable[..., Any]) -> Callable[..., Any]:
    """``graph`` compiled by Inductor for fixed shapes, drawing random numbers from PyTorch's generator
    (``fallback_random``: the compiled code draws what the eager code draws). Public API only; compiles
    on its first call."""
    inductor_cache_dir()
    return torch.compile(graph, dynamic=False, options={"fallback_random": True})


def compile_step(
    graph: torch.fx.GraphModule, example: Sequence[torch.Tensor]
) -> Callable[..., Any]:
    """Inductor on a captured graph for the shapes of ``example``, called directly: no Dynamo frame, so
    no guard check per call and no recompilation with other settings, random numbers from PyTorch's
    generator; Inductor's on-disk cache can serve a later process (the tracing context carries a
    shape environment). Falls back to :func:`compile_graph` where this torch lacks any of it."""
    try:
        from torch._guards import TracingContext, tracing
        from torch._inductor import compile as inductor_compile
        from torch._inductor import config as inductor_config
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.symbolic_shapes import ShapeEnv
    except ImportError:  # pragma: no cover - a torch that moved them: the public route
        return compile_graph(graph)
    inductor_cache_dir()
    context = TracingContext(FakeTensorMode(shape_env=ShapeEnv()))
    with inductor_config.patch(fallback_random=True), tracing(context):
        return inductor_compile(graph, list(example))


def pyro_handler_stack() -> Sequence[Any] | None:
    """The active Pyro messengers, outermost first, or None when this Pyro does not expose them."""
    try:
        from pyro.poutine.runtime import _PYRO_STACK
    except ImportError:  # pragma: no cover - a Pyro that moved its stack
        return None
    return tuple(_PYRO_STACK)


def tensor_edits(t: torch.Tensor) -> object:
    """A value that changes whenever ``t`` is edited in place (its version counter); a fresh object
    (equal to nothing) when this torch has no counter, so a cache keyed on it is never reused."""
    version = getattr(t, "_version", None)
    return object() if version is None else int(version)
