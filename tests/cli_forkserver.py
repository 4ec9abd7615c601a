"""Run many ``ppl-vae`` commands cheaply: import the CLI once, then fork one child per command.

    python tests/cli_forkserver.py      # then JSON lines on stdin, one answer per line on stdout

``{"op": "run", "argv": [...], "log": PATH, "env": {...}, "fsize": BYTES}`` forks a child that
runs ``ppl_vae.cli.main(argv)`` exactly as ``python -m ppl_vae.cli ARGV`` would (its own process,
stdout and stderr to ``log``, ``env`` set, optionally a file-size limit with SIGXFSZ ignored so
a write fails with EFBIG like a full disk) and answers ``{"pid": PID}`` at once, so the caller
can SIGKILL it at any moment. ``{"op": "wait", "pid": PID}`` answers ``{"rc": CODE}`` (negative:
killed by that signal). A fresh ``python -m ppl_vae.cli`` spends about 4 s importing torch, Pyro
and scikit-learn; a forked child starts in milliseconds, which is what makes dozens of kills and
injected faults affordable in the default test suite.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ForkServer:
    """Client: ``server.run(argv, log) -> pid``, ``server.wait(pid) -> rc``, ``server.call(...) -> (rc, text)``."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)

    def _send(self, job: dict) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(
        self, argv: list[str], log: str | Path, env: dict | None = None, fsize: int | None = None
    ) -> int:
        return self._send(
            {
                "op": "run",
                "argv": [str(a) for a in argv],
                "log": str(log),
                "env": env or {},
                "fsize": fsize,
            }
        )["pid"]

    def wait(self, pid: int) -> int:
        return self._send({"op": "wait", "pid": pid})["rc"]

    def call(self, argv: list[str], log: str | Path, **kwargs) -> tuple[int, str, float]:
        """Run to the end: (exit status, output, seconds)."""
        t0 = time.perf_counter()
        rc = self.wait(self.run(argv, log, **kwargs))
        return rc, Path(log).read_text(), time.perf_counter() - t0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _child(job: dict) -> None:
    try:
        os.environ.update(job.get("env", {}))
        if job.get("cwd"):
            os.chdir(job["cwd"])
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if job.get("fsize"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))
        rc = main(job["argv"])
    except SystemExit as err:  # argparse
        rc = err.code if isinstance(err.code, int) else 2
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def serve() -> None:
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        if job["op"] == "run":
            pid = os.fork()
            if pid == 0:
                _child(job)
            print(json.dumps({"pid": pid}), flush=True)
        elif job["op"] == "wait":
            _, status = os.waitpid(job["pid"], 0)
            print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch._dynamo  # noqa: F401  (torch.optim.Adam imports it on first use: 1.7 s)

    from ppl_vae.cli import main  # the imports are what the server saves
    from ppl_vae.data import load_dataset

    load_dataset("digits")  # warm scikit-learn's loader too
    import io

    import matplotlib

    matplotlib.use("Agg")
    import arviz  # noqa: F401  (evaluate's and compare's netCDF and figures: 2-3 s of imports)
    import h5netcdf  # noqa: F401
    import xarray  # noqa: F401
    from matplotlib.figure import Figure

    fig = Figure(layout="constrained")  # load the fonts once, here, not in every child
    fig.add_subplot().set_title("warm")
    fig.savefig(io.BytesIO(), format="png")
    serve()
