"""Boundary checks, one copy: integers, finite numbers, sizes against memory, output paths.

Every entry point (the API and the command line) checks what a user gave it here, before
anything is allocated or written, and raises a :mod:`ppl_vae.errors` user error whose message
names the argument, the value, and what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import ArgumentTypeError, DataError, ResourceError, RunExistsError, UserError

__all__ = [
    "available_memory",
    "cgroup_available",
    "check_finite",
    "check_finite_number",
    "check_device",
    "check_int",
    "check_memory",
    "check_output_path",
    "check_positive_int",
    "format_bytes",
    "mlp_parameters",
    "training_bytes",
]

#: Bytes per trained float32 parameter at the peak of training, as measured (peak RSS over the
#: interpreter's, ``benchmarks/memory_check.py``): the value 4, its gradient 4, Adam's two moments 8,
#: their per-step temporaries (``sqrt(v)``, the update) 8, backward's temporaries 4, and the engine's
#: own copies (Pyro's traces, captured graphs, a checkpoint's serialised tensors) 12. Measured on an
#: MLP VAE of 18.5 M parameters: 34 (Pyro eager), 38 (captured graphs), 40 (graphs + checkpoint).
TRAINING_BYTES_PER_PARAMETER = 40
#: The same for the compiled whole step (``ppl_vae.train.fused``, used by ``fast="auto"`` once a run has
#: taken ``FUSE_AFTER_STEPS`` steps): it is checked against the eager step on copies of the parameters,
#: gradients and both moments, beside the compiled graph's buffers (72.5 measured).
FUSED_BYTES_PER_PARAMETER = 76
#: Bytes per float of a batch's activations (per row, per unit of the layers' widths): forward outputs
#: kept for backward (pre- and post-activation), their gradients, the batch's own copies (its
#: binarisation, Pyro's traces): 18-24 measured (``benchmarks/memory_check.py``).
ACTIVATION_BYTES_PER_FLOAT = 24
#: What a check leaves free beyond its estimate: a share of it, and a fixed amount for the interpreter's
#: own growth (allocator caches, the first traces).
MEMORY_MARGIN, MEMORY_RESERVE = 0.10, 256 * 2**20


def check_int(
    value: object, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` (not a bool, not a float) within ``[minimum, maximum]``; the one copy of this
    check (the estimators, the objectives' parameters and the command line all use it)."""
    need = f"an integer >= {minimum}" if minimum is not None else "an integer"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be {need}; got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be {need}; got {value}")
    if maximum is not None and value > maximum:
        raise UserError(f"{name} must be at most {maximum}; got {value}")
    return int(value)


def check_positive_int(value: object, name: str) -> int:
    return check_int(value, name, minimum=1)


def check_finite_number(value: object, name: str, *, positive: bool = False) -> float:
    """``value`` as a finite float (and > 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number; got {value}")
    if positive and value <= 0:
        raise UserError(f"{name} must be positive; got {value:g}")
    return value


# ------------------------------------------------------------------------------ memory
def available_memory() -> int:
    """Bytes a new allocation can use now: ``MemAvailable`` (else free pages), capped by a cgroup limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            avail = 1 << 62  # unknown: do not refuse
    left = cgroup_available()
    return avail if left is None else min(avail, left)


#: (limit, usage) files of the memory cgroup: v2, then v1
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def cgroup_available(files: Sequence[tuple[str, str]] = CGROUP_FILES) -> int | None:
    """The container's memory limit minus what it uses (cgroup v2 or v1), or None when there is none."""
    for limit_file, used_file in files:
        try:
            limit = Path(limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < 1 << 60:  # "max", or v1's "no limit" (2**63 - page)
                used = int(Path(used_file).read_text().strip())
                return max(int(limit) - used, 0)
        except (OSError, ValueError):
            continue
    return None


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, hint: str = "", *, margin: bool = False) -> None:
    """Refuse (:class:`~ppl_vae.errors.ResourceError`) when ``nbytes`` exceed the available memory.

    Args:
        nbytes: an estimate of what the step will allocate.
        what: what needs it, e.g. ``"a VAE with hidden_dims (20000, 20000)"``.
        hint: what to do instead, e.g. ``"use fewer importance samples"``.
        margin: also keep :data:`MEMORY_MARGIN` of the estimate and :data:`MEMORY_RESERVE` free (for a
            long job, such as training, that must not be killed by the kernel half-way).
    """
    avail = available_memory()
    need = nbytes * (1 + MEMORY_MARGIN) + MEMORY_RESERVE if margin else nbytes
    if need > avail:
        kept = f" (and the check keeps {MEMORY_MARGIN:.0%} more free)" if margin else ""
        raise ResourceError(
            f"{what} needs about {format_bytes(nbytes)} of memory, but this machine has "
            f"{format_bytes(avail)} available{kept}" + (f": {hint}" if hint else "")
        )


def mlp_parameters(sizes: Sequence[int]) -> int:
    """Weights and biases of a chain of linear layers ``sizes[0] -> sizes[1] -> ...``."""
    sizes = [int(s) for s in sizes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def training_bytes(n_parameters: int, fused: bool = False) -> int:
    """Peak memory to train ``n_parameters`` float32 parameters with Adam (value, gradient, the moments,
    their temporaries and the engine's copies; ``fused``: the compiled whole step's)."""
    per = FUSED_BYTES_PER_PARAMETER if fused else TRAINING_BYTES_PER_PARAMETER
    return int(n_parameters) * per


def check_device(device: object):
    """``"auto"`` -> CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``; returns a ``torch.device``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ArgumentTypeError(
            f"device must be a string like 'auto', 'cpu' or 'cuda'; got {type(device).__name__}"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device {device!r} was asked for, but torch sees no CUDA device: use device 'cpu' or 'auto'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    return dev


# ------------------------------------------------------------------------------ output paths
def check_output_path(
    path: str | os.PathLike[str] | None,
    what: str,
    *,
    kind: str = "folder",
    force: bool = False,
) -> Path:
    """Check, before any work starts, that ``path`` can be created and written.

    ``kind="folder"``: ``path`` must not be an existing file; if it exists it must be a writable
    folder, else its nearest existing parent must be a writable folder. ``kind="file"``: the
    same for the parent folder, and an existing file is refused unless ``force``. Creates
    nothing. Returns the path.
    """
    if path is None or str(path).strip() == "":
        raise UserError(f"{what}: the path is empty; name a {kind}")
    p = Path(path).expanduser()
    if kind == "file":
        if p.is_symlink():
            from .store.files import refuse_link

            refuse_link(p, what)
        if p.is_dir():
            raise RunExistsError(f"{what}: {str(p)!r} is a folder; name a file inside it")
        if p.exists() and not force:
            raise RunExistsError(
                f"{what}: {str(p)!r} already exists: choose another name, or pass --force "
                "to replace it"
            )
        if p.exists() and not os.access(p, os.W_OK):
            raise ResourceError(f"{what}: {str(p)!r} is not writable")
        _check_creatable(p.parent, what, shown=p)
        return p
    if p.exists() and not p.is_dir():
        raise RunExistsError(f"{what}: {str(p)!r} is a file, not a folder: choose another path")
    _check_creatable(p, what)
    return p


#: file systems that are the kernel's interfaces, not storage: nothing ppl_vae writes belongs there
PSEUDO_FILESYSTEMS = {
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "binfmt_misc", "efivarfs",
}  # fmt: skip


def filesystem_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the file system ``path`` is on (``"ext4"``, ``"proc"``, ...), from the longest mount
    point above it in ``mountinfo``; None where that cannot be read (not Linux)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    real, best, kind = os.path.realpath(path), "", None
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        fs = line.split(" - ", 1)[1].split()[0]
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs
    return kind


def _check_creatable(folder: Path, what: str, shown: Path | None = None) -> None:
    """``folder`` exists and is writable, or its nearest existing ancestor is a writable folder on a file
    system that stores files (not ``/proc``, ``/sys``, ``/dev``)."""
    probe = folder.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        if probe.is_symlink():  # a dangling link: creating through it would go elsewhere
            raise UserError(f"{what}: {str(probe)!r} is a broken symbolic link")
        probe = probe.parent
    fs = filesystem_type(probe)
    if fs in PSEUDO_FILESYSTEMS:
        raise ResourceError(
            f"{what}: {str(shown or folder)!r} is on the {fs} file system (the kernel's interface, not storage): "
            "choose a folder on a disk"
        )
    if not probe.is_dir():
        raise RunExistsError(
            f"{what}: cannot create {str(folder)!r}: {str(probe)!r} is a file, not a folder"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ResourceError(
            f"{what}: cannot write in {str(probe)!r} (permission denied or a read-only "
            "file system): choose a folder you can write to"
        )


# ------------------------------------------------------------------------------ tensors
def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`~ppl_vae.errors.DataError` naming how many entries of ``x: (N, ...)`` are NaN/inf, in how
    many rows, and the first one (row and position within it). A fast path sums first: one pass when clean."""
    if not x.is_floating_point() or bool(
        torch.isfinite(x.sum())
    ):  # NaN/inf would make the sum non-finite
        return
    bad = ~torch.isfinite(x)
    n_bad = int(bad.sum())
    if not n_bad:  # the sum only overflowed
        return
    if x.dim() == 0:
        raise DataError(f"{what} is {x.item()}: it must be finite")
    flat = bad.reshape(len(x), -1)
    rows = flat.any(-1).nonzero().flatten()
    row = int(rows[0])
    col = int(flat[row].nonzero().flatten()[0])
    raise DataError(
        f"{what}: {n_bad} non-finite value(s) (NaN or inf) in {len(rows)} row(s); the first is row {row}, "
        f"{'column' if x.dim() == 2 else 'flat position'} {col} (value {x.reshape(len(x), -1)[row, col].item()}): "
        "drop or impute those rows"
    )
