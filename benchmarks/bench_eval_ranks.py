"""Evaluation across processes: ``iw_log_likelihood`` in one process against ``torchrun --nproc_per_node 2``.

IW with K = 1000 on the first 2000 MNIST test points (dynamically binarised; read with the idx loader from
``--data-dir``, default ``../shared/data/mnist`` beside the repository or ``$PPL_VAE_DATA``; the digits data set,
tiled to 2000 rows, when MNIST is absent, and the header says so) with ``pv.VAE(784, 50, (400,))`` (seeded
initial weights: the time does not depend on training). Each way runs in a fresh process: the timed span is the
``iw_log_likelihood`` call (``fast="auto"``: the job is 2e6 rows, so every process compiles its chunk; the
compile is part of what a user waits for), between barriers under torchrun; the wall time of the whole
launch (Python, imports, data) is printed beside it. The two results must agree to float rounding (same seed
per chunk of points).

    python benchmarks/bench_eval_ranks.py                 # torch's default threads alone; 1 thread per rank
    python benchmarks/bench_eval_ranks.py --threads 1     # 1 thread in both
    python benchmarks/bench_eval_ranks.py --points 500 --num-samples 200   # a quick look

On a shared machine read the load average printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine, thread_counts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> str | None:
    shared = REPO.parent / "shared" / "data" / "mnist"
    return str(shared) if shared.is_dir() else os.environ.get("PPL_VAE_DATA")


def load_points(data_dir: str | None, n: int) -> tuple[torch.Tensor, str]:
    """``n`` binary test rows of MNIST, else of digits tiled (784 columns either way), and what they are."""
    from ppl_vae.data import load_dataset
    from ppl_vae.errors import UserError

    try:
        data = load_dataset("mnist", data_dir=data_dir, binarize="dynamic", seed=0)
        return data.test[:n].float(), f"MNIST test points from {data_dir}"
    except (UserError, OSError) as err:
        digits = load_dataset("digits", binarize="dynamic", seed=0).test.float()
        x = digits.repeat(1, 13)[:, :784]  # 64 -> 832 columns, cut to MNIST's 784
        x = x.repeat(-(-n // len(x)), 1)[:n]
        return x, f"digits tiled to {n} x 784 (MNIST absent: {str(err)[:80]})"


def worker(args: argparse.Namespace) -> None:
    """One process of a launch: the timed IW call; rank 0 writes the figures and the values."""
    import torch.distributed as dist

    import ppl_vae as pv

    if args.threads:
        torch.set_num_threads(args.threads)
    x, what = load_points(args.data_dir, args.points)
    torch.manual_seed(0)
    vae = pv.VAE(784, 50, (400,))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    group = dist.is_initialized()
    if group:
        dist.barrier()
    t0 = time.perf_counter()
    iw = pv.iw_log_likelihood(vae, x, args.num_samples, seed=0, fast=args.fast)
    if group:
        dist.barrier()
    seconds = time.perf_counter() - t0
    rank = dist.get_rank() if group else 0
    threads = thread_counts()
    if group:  # every rank's thread counts
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, threads)
        threads = " | ".join(everyone)
    if rank == 0:
        torch.save(iw, args.result + ".pt")
        record = {"seconds": seconds, "data": what, "threads": threads, "mean_iw": float(iw.mean())}
        Path(args.result + ".json").write_text(json.dumps(record))
    if group:
        dist.destroy_process_group()


def launch(args: argparse.Namespace, ranks: int, result: str) -> dict:
    """One fresh launch (a plain process, or torchrun with ``ranks`` processes); its figures."""
    flags = [
        *("--worker", "--result", result, "--points", str(args.points)),
        *("--num-samples", str(args.num_samples), "--fast", args.fast),
    ]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    script = str(Path(__file__).resolve())
    if ranks == 1:
        cmd = [sys.executable, script, *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", str(ranks), script, *flags]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"launch with {ranks} process(es) failed:\n{proc.stderr[-3000:]}")
    record = json.loads(Path(result + ".json").read_text())
    record["wall"] = wall
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=2000)
    p.add_argument("--num-samples", "-k", type=int, default=1000)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--fast", choices=["auto", "compile", "eager"], default="auto")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads of every process (default: torch's)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print_machine(
        f"bench_eval_ranks: IW K={args.num_samples} on {args.points} points, 1 process vs {args.ranks}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        one = launch(args, 1, str(Path(tmp) / "one"))
        many = launch(args, args.ranks, str(Path(tmp) / "many"))
        diff = float(
            (torch.load(Path(tmp) / "one.pt") - torch.load(Path(tmp) / "many.pt")).abs().max()
        )
    print(f"data: {one['data']}")
    print(f"{'launch':<24} {'IW call s':>10} {'wall s':>8}  threads")
    print(f"{'1 process':<24} {one['seconds']:>10.2f} {one['wall']:>8.2f}  {one['threads']}")
    label = f"torchrun x{args.ranks}"
    print(f"{label:<24} {many['seconds']:>10.2f} {many['wall']:>8.2f}  {many['threads']}")
    print(
        f"speed-up of the IW call: {one['seconds'] / many['seconds']:.2f}x (wall: "
        f"{one['wall'] / many['wall']:.2f}x); max |difference| per point {diff:.2e} nats; "
        f"mean IW {one['mean_iw']:.4f}"
    )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
