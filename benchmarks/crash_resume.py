"""Kill `ppl-vae train` at every step of every checkpoint commit and at random moments; resume; compare.
Then the same for the commands that write outputs: evaluate, compare, sample, plot.

    OMP_NUM_THREADS=1 python benchmarks/crash_resume.py [--kills 100] [--output-kills 20] [--seed 0]

1. An uninterrupted run (digits, MLP 64-32-4, trace ELBO, 4 epochs) is the reference.
2. Fault injection: for N = 1, 2, ... the run is started with ``PPL_VAE_FAULT_AT=op:N``, which
   exits (status 137, as SIGKILL) just before the N-th write, fsync, rename or removal of a
   checkpoint commit, until N is past the last one: every step of every commit of the run.
3. ``--kills`` runs are killed with SIGKILL at a uniformly random moment of the run (every
   fifth with SIGINT, i.e. Ctrl-C; every third resumed run is killed again at random).

After each crash the folder is checked (what is committed is a prefix of the reference and
loads; metrics.json is at most one epoch behind), the run is resumed through the CLI, and its
history must equal the reference in every field but ``seconds`` (to 1e-9).

4. Outputs (``benchmarks/crash_outputs.py``): evaluate and compare crashed at every step of their set
   commits and ``--output-kills`` times at random, sample (PNG, .npy) and plot at random: after each
   crash the outputs read whole (one set, no mix, nothing torn) and the next call succeeds.

Prints one line per kind and exits 1 if anything was lost. Uses tests/cli_forkserver.py (forked
``ppl_vae.cli.main``).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cli_forkserver import ForkServer  # noqa: E402
from crash_outputs import run_outputs  # noqa: E402
from test_crash import ARGS, assert_same_history, check_crashed, recover  # noqa: E402

from ppl_vae.runs import read_history  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kills", type=int, default=100, help="random SIGKILL/SIGINT runs (default 100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument(
        "--max-faults", type=int, default=500, help="stop injecting after this many steps"
    )
    parser.add_argument(
        "--output-kills",
        type=int,
        default=20,
        help="random kills per output-writing command (default 20; compare a third of it)",
    )
    parser.add_argument("--outputs-only", action="store_true", help="skip the training part (1-3)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="crash_resume."))
    server = ForkServer()
    failures: list[str] = []
    try:
        rc, text, seconds = server.call([*ARGS, "--out", tmp / "ref"], tmp / "ref.log")
        assert rc == 0, text
        want = read_history(tmp / "ref")[1]

        def survive(label: str, out: Path, again_after: float | None = None) -> None:
            try:
                check_crashed(out, want)
                if again_after is not None:
                    recover(server, out, tmp / "log", kill_after=again_after)
                    check_crashed(out, want)
                rc = recover(server, out, tmp / "log")
                assert rc == 0, (tmp / "log").read_text()
                assert_same_history(read_history(out)[1], want)
            except Exception:
                failures.append(f"{label}: {traceback.format_exc(limit=3)}")
            shutil.rmtree(out, ignore_errors=True)

        if args.outputs_only:
            failures += run_outputs(server, tmp / "ref", tmp, rng, args.output_kills)
            return _report(failures)
        t0, faults, committed = time.perf_counter(), 0, {}
        for n in range(1, args.max_faults + 1):
            out = tmp / f"fault{n}"
            rc, text, _ = server.call(
                [*ARGS, "--out", out], tmp / "f.log", env={"PPL_VAE_FAULT_AT": f"op:{n}"}
            )
            if rc == 0:  # past the last step of the last commit
                shutil.rmtree(out, ignore_errors=True)
                break
            if rc != 137:
                failures.append(f"op:{n}: exit {rc}: {text[-500:]}")
                continue
            faults += 1
            epochs = (
                len(read_history(out)[1]) if (out / "checkpoint" / "CURRENT.json").exists() else 0
            )
            committed[epochs] = committed.get(epochs, 0) + 1
            survive(f"op:{n}", out)
        print(
            f"injected faults: {faults} (every write/fsync/rename/remove of the run's 4 commits; committed "
            f"epochs at the crash: {dict(sorted(committed.items()))}), {time.perf_counter() - t0:.0f} s"
        )

        t0, landed = time.perf_counter(), 0
        for k in range(args.kills):
            out = tmp / f"kill{k}"
            pid = server.run([*ARGS, "--out", out], tmp / "k.log")
            time.sleep(rng.uniform(0.0, seconds))
            os.kill(pid, signal.SIGINT if k % 5 == 4 else signal.SIGKILL)
            landed += server.wait(pid) in (-9, 130)
            survive(f"kill {k}", out, rng.uniform(0.0, 0.6 * seconds) if k % 3 == 2 else None)
        print(
            f"random kills: {args.kills} runs, {landed} killed before they ended (+ every third resume killed "
            f"again), {time.perf_counter() - t0:.0f} s"
        )
        failures += run_outputs(server, tmp / "ref", tmp, rng, args.output_kills)
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return _report(failures)


def _report(failures: list[str]) -> int:
    print(f"lost or changed: {len(failures)}")
    for failure in failures[:10]:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
