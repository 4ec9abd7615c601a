"""The machine and library versions a benchmark ran on, printed at the top of its output."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from typing import Any


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    except OSError:
        pass
    return "?"


def thread_counts() -> str:
    """Torch's intra-/inter-op thread counts, OMP_NUM_THREADS, and XLA's flags if JAX is installed.

    Printed by every benchmark: a ratio means little without the thread counts of both sides.
    """
    import torch

    text = (
        f"intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset (torch default)')}"
    )
    if importlib.util.find_spec("jax") is not None or "XLA_FLAGS" in os.environ:
        text += f"; XLA_FLAGS={os.environ.get('XLA_FLAGS', 'unset (XLA default: all cores)')}"
    return text


def machine_info() -> dict[str, Any]:
    """CPU, cores, torch threads, GPU (if any) and versions of Python, torch, Pyro, NumPy."""
    import numpy
    import pyro
    import torch

    info: dict[str, Any] = {
        "cpu": f"{_cpu_name()} ({_cpu_flags()})",
        "cores": os.cpu_count(),
        "torch_threads": thread_counts(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
    try:
        info["load_avg"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    return info


def print_machine(title: str) -> dict[str, Any]:
    """Print a header block with the machine and versions; returns the same as a dict."""
    info = machine_info()
    print(title)
    print("=" * len(title))
    for key, value in info.items():
        print(f"  {key:<14} {value}")
    print()
    return info
