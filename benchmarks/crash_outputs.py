"""The outputs part of ``benchmarks/crash_resume.py``: evaluate, compare, sample and plot killed at every
step of their commits and at random moments; nothing torn, nothing mixed, nothing lost.

For each command a first call commits its outputs (the previous set), then:

- **fault injection**: the command is run again with ``PPL_VAE_FAULT_AT=op:N`` (exit 137, as SIGKILL,
  just before its N-th write, fsync, rename or removal) for N = 1, 2, ... until it completes: every step
  of ``evaluate``'s and ``compare``'s set commit;
- **random kills**: SIGKILL (every fifth SIGINT) at a uniformly random moment of the command.

After each crash the outputs must read whole: ``evaluation/`` and ``comparison/`` one set, every file
matching its manifest, the summary's K equal to the netCDF's and the figures complete (the previous set
or the new one, never a mix); ``sample``'s and ``plot``'s PNGs complete, the ``.npy`` loadable. Then
the command is run once more and must succeed and leave no temporary file.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cli_forkserver import ForkServer
from test_output_sets import COMPARE, PNG_END, check_evaluation, check_evaluation_after_crash

from ppl_vae.store.outputs import read_output_set


class Outputs:
    """Crash the writing commands of one trained run folder; collect what did not survive."""

    def __init__(self, server: ForkServer, run: Path, tmp: Path, rng: random.Random) -> None:
        self.server, self.run, self.tmp, self.rng = server, run, tmp, rng
        self.failures: list[str] = []

    def call(self, argv: list, **kwargs) -> tuple[int, str, float]:
        return self.server.call(argv, self.tmp / "o.log", **kwargs)

    def check(self, label: str, what: Callable[[], None]) -> None:
        try:
            what()
        except Exception:
            self.failures.append(f"{label}: {traceback.format_exc(limit=3)}")

    def steps(self, label: str, argv: list, after: Callable[[], None]) -> int:
        """Crash ``argv`` before each of its steps in turn; returns the number crashed."""
        crashed = 0
        for n in range(1, 200):
            rc, text, _ = self.call(argv, env={"PPL_VAE_FAULT_AT": f"op:{n}"})
            if rc == 0:
                return crashed
            if rc != 137:
                self.failures.append(f"{label} op:{n}: exit {rc}: {text[-300:]}")
                continue
            crashed += 1
            self.check(f"{label} op:{n}", after)
        self.failures.append(f"{label}: never finished")
        return crashed

    def kills(self, label: str, argv: list, seconds: float, count: int, after) -> int:
        """Kill ``argv`` at ``count`` random moments; returns how many were killed before they ended."""
        landed = 0
        for k in range(count):
            pid = self.server.run(argv, self.tmp / "k.log")
            time.sleep(self.rng.uniform(0.0, 1.1 * seconds))
            os.kill(pid, signal.SIGINT if k % 5 == 4 else signal.SIGKILL)
            landed += self.server.wait(pid) in (-9, 130)
            self.check(f"{label} kill {k}", after)
        return landed

    def finish(self, label: str, argv: list, after: Callable[[], None]) -> None:
        rc, text, _ = self.call(argv)
        if rc != 0:
            self.failures.append(f"{label}: the run after the crashes failed: {text[-300:]}")
        self.check(f"{label} after", after)
        leftovers = [p.name for p in self.run.rglob(".*.tmp*")]
        if leftovers:
            self.failures.append(f"{label}: temporary files left: {leftovers[:5]}")


def _whole_pngs(*paths: Path) -> None:
    for path in paths:
        assert path.read_bytes().endswith(PNG_END), f"{path} is torn"


def run_outputs(server: ForkServer, run: Path, tmp: Path, rng: random.Random, kills: int) -> list:
    """Every crash of the outputs part, printed one line per command; returns the failures."""
    o = Outputs(server, run, tmp, rng)
    evaluate = ["evaluate", run, "-k", "40", "--max-points", "100", "--no-progress", "--force"]
    assert o.call(evaluate)[0] == 0
    t0 = time.perf_counter()
    faults = o.steps("evaluate", evaluate, lambda: check_evaluation_after_crash(run))
    _, _, seconds = o.call(evaluate)
    landed = o.kills(
        "evaluate", evaluate, seconds, kills, lambda: check_evaluation_after_crash(run)
    )
    o.finish("evaluate", evaluate, lambda: check_evaluation(run))
    print(
        f"evaluate: {faults} faults (every step of its set commit), {landed}/{kills} killed at "
        f"random moments, {time.perf_counter() - t0:.0f} s"
    )

    t0, cmp = time.perf_counter(), tmp / "cmp"
    compare = [*COMPARE, "--out", cmp, "--force"]
    assert o.call(compare)[0] == 0

    def comparison_whole() -> None:
        found = read_output_set(cmp, "comparison")
        assert found.files["comparison.png"].endswith(PNG_END)

    faults = o.steps("compare", compare, comparison_whole)
    _, _, seconds = o.call(compare)
    landed = o.kills("compare", compare, seconds, max(1, kills // 3), comparison_whole)
    o.finish("compare", compare, comparison_whole)
    print(
        f"compare: {faults} faults, {landed}/{max(1, kills // 3)} killed at random moments, "
        f"{time.perf_counter() - t0:.0f} s"
    )

    t0 = time.perf_counter()
    png, npy = tmp / "s.png", tmp / "s.npy"
    for target, extra in ((png, []), (npy, ["-n", "2000"])):
        sample = ["sample", run, "--out", target, "--force", *extra]
        assert o.call(sample)[0] == 0
        check = (lambda: _whole_pngs(png)) if target == png else (lambda: np.load(npy))
        _, _, seconds = o.call(sample)
        landed = o.kills(f"sample {target.suffix}", sample, seconds, kills, check)
        o.finish(f"sample {target.suffix}", sample, check)
        print(f"sample {target.suffix}: {landed}/{kills} killed at random moments")
    plot = ["plot", run, "--kind", "latent", "recon", "curves", "--force"]
    _, _, seconds = o.call(plot)
    pngs = [run / f"{k}.png" for k in ("latent", "recon", "curves")]
    landed = o.kills("plot", plot, seconds, kills, lambda: _whole_pngs(*pngs))
    o.finish("plot", plot, lambda: _whole_pngs(*pngs))
    print(
        f"plot: {landed}/{kills} killed at random moments; sample and plot "
        f"{time.perf_counter() - t0:.0f} s"
    )
    shutil.rmtree(cmp, ignore_errors=True)
    return o.failures
