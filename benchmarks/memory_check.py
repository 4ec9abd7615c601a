"""Does the memory check count what training really allocates? Peak RSS of real training runs against
the estimate ``ppl-vae train`` refuses with (``ppl_vae.runs.build.training_memory``).

    OMP_NUM_THREADS=1 python benchmarks/memory_check.py [--quick]

Each case runs in a fresh interpreter: after the imports and the data (the baseline), a thread samples
``VmRSS`` every millisecond while ``pv.fit`` trains one epoch of an MLP VAE on digits (with a checkpoint
folder, as ``train`` does); the peak over the baseline is what training allocated. Printed per case:
parameters, the fast path, measured MiB and bytes per parameter, the estimate, and measured / estimate
(below 1: the check is on the safe side). Cases: eager Pyro, captured graphs, the compiled whole step
(``fast="compile"``: what ``fast="auto"`` uses from step 3000 of a run on), a large batch and an IWAE
objective (activations). Exits 1 when a measured peak exceeds its estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, os, sys, tempfile, threading, time
import torch, ppl_vae as pv
from ppl_vae.data import load_dataset
hidden, batch, objective, fast = json.loads(sys.argv[1])
data = load_dataset("digits", binarize="dynamic", seed=0)
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))
peak = [0]
def watch():
    while True:
        peak[0] = max(peak[0], rss()); time.sleep(0.001)
threading.Thread(target=watch, daemon=True).start()
time.sleep(0.05)
base = rss()
vae = pv.VAE(64, 8, tuple(hidden), likelihood="bernoulli")
history = pv.fit(vae, data, objective=objective, epochs=1, batch_size=batch, progress=False,
                 fast=fast, checkpoint_dir=tempfile.mkdtemp())
time.sleep(0.05)
path = (history.meta or {}).get("fast_path", {}).get("path", "?")
print(json.dumps({"peak": peak[0] - base, "path": path, "rows": data.meta.n_train}))
"""

CASES = [  # hidden dims, batch, objective, fast
    ((3000, 3000), 128, "analytic", "off"),
    ((3000, 3000), 128, "analytic", "graph"),
    ((3000, 3000), 128, "analytic", "compile"),
    ((4000,), 1437, "analytic", "auto"),
    ((4000,), 1437, "iwae:k=20", "auto"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first two cases only")
    args = parser.parse_args()
    from ppl_vae._checks import format_bytes
    from ppl_vae.runs.build import objective_particles, training_memory, training_steps

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(
        f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, torch threads in each child: the same; load: "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'case':<44} {'params':>11} {'path':>8} {'measured':>10} {'B/param':>8} "
        f"{'estimate':>10} {'ratio':>6}"
    )
    worst = 0.0
    for hidden, batch, objective, fast in CASES[:2] if args.quick else CASES:
        out = (
            subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps([hidden, batch, objective, fast])],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        got = json.loads(out)
        config = {"class": "VAE", "input_dim": 64, "latent_dim": 8, "hidden_dims": hidden}
        steps = training_steps(1, got["rows"], batch) if fast != "compile" else None
        m = training_memory(
            config, batch, rows=got["rows"], particles=objective_particles(objective), steps=steps
        )
        estimate = m["weights"] + m["activations"]
        ratio = got["peak"] / estimate
        worst = max(worst, ratio)
        label = f"{'x'.join(map(str, hidden))} batch {batch} {objective} fast={fast}"
        print(
            f"{label:<44} {m['params']:>11,} {got['path'][:8]:>8} {format_bytes(got['peak']):>10} "
            f"{got['peak'] / m['params']:>8.1f} {format_bytes(estimate):>10} {ratio:>6.2f}"
        )
    print(f"worst measured / estimate: {worst:.2f} (the check also keeps 10% and 256 MiB free)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
