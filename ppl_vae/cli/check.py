"""``ppl-vae check RUN``: posterior predictive checks on a run's test split; the outputs commit as one set."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .._checks import check_memory, check_output_path
from ..errors import UserError
from ..store.lock import lock_folder
from .args import positive_int, refuse_outputs, seed

#: the output set check commits: OUT/check/ (check.csv, check.png, MANIFEST.json)
CHECK = "check"
#: rows of per-column statistics printed before the rest is left to check.csv
SHOWN = 40


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="posterior predictive checks of a trained run (per-column statistics, p-values, a figure)",
        description="Replicate the run's test split from the model at posterior draws z ~ q(z | x) of "
        "each row and compare statistics of the data with their replicated distribution: per column the "
        "mean, variance and zero fraction, per level of a categorical or binary column its frequency, per "
        "pair of columns their correlation; two-sided predictive p-values, 95%% intervals, p < 0.01 "
        "flagged extreme. Writes OUT/check/: check.csv (every row) and check.png (refused if it "
        "exists, unless --force).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument("--out", default=None, help="folder for the outputs (default: RUN_DIR)")
    p.add_argument(
        "-n",
        "--num-samples",
        type=positive_int,
        default=100,
        metavar="DRAWS",
        help="replicated data sets (default 100; p-values resolve 1/DRAWS)",
    )
    p.add_argument(
        "--prior",
        action="store_true",
        help="also the prior predictive check (z ~ p(z)): its rows in the table and the figure "
        "(check.csv always holds both)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the draws (default 0)")
    p.add_argument("--force", action="store_true", help="replace a check set that already exists")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from ..runs import load_run

    if args.num_samples < 2:
        raise UserError(f"--num-samples {args.num_samples}: a p-value needs at least 2 draws")
    out = Path(args.out) if args.out is not None else Path(args.run_dir)
    if args.out is not None:
        check_output_path(args.out, "--out")
    what = "--out" if args.out is not None else "RUN_DIR"
    if not Path(args.run_dir).is_dir() and args.out is None:
        load_run(args.run_dir)  # says what is wrong with RUN_DIR, before anything is made
    refuse_outputs(out, [CHECK], args.force, what)
    with lock_folder(out):  # one writer: a second check (or a train, an evaluate) in OUT is refused
        refuse_outputs(out, [CHECK], args.force, what)
        return _check(args, out)


def _check(args: argparse.Namespace, out: Path) -> int:
    import time

    import matplotlib

    matplotlib.use("Agg")
    from ..analysis.ppc import predictive_check
    from ..plots.checks import predictive_check_png
    from ..runs import load_run
    from ..store.outputs import commit_output_set

    run = load_run(args.run_dir)
    if not all(callable(getattr(run.model, part, None)) for part in ("model", "guide")):
        raise UserError(
            f"{type(run.model).__name__} (run {args.run_dir}) has no likelihood p(x | z) to replicate data "
            "from: check runs on models trained by SVI (vae, hvae, m2, --program)"
        )
    x = run.data.test
    if x is None or len(x) < 2:
        raise UserError(f"run {args.run_dir} has no test split to check (train with a test split)")
    mask = getattr(run.data, "mask", lambda split: None)("test")
    cells = len(x) * x[0].numel()
    check_memory(  # posterior and prior replicates, float32 draws stacked as float64
        2 * args.num_samples * cells * 12,
        f"check -n {args.num_samples} on {len(x)} rows of {x[0].numel()} values",
        "use fewer draws (-n)",
    )
    t0 = time.perf_counter()
    check = predictive_check(
        run.model, x if mask is None else (x, mask), num_samples=args.num_samples, seed=args.seed
    )
    seconds = time.perf_counter() - t0
    sources = ("posterior", "prior") if args.prior else ("posterior",)
    epoch = run.history[-1]["epoch"] if len(run.history) else 0
    record = {
        "command": "check",
        "run": str(Path(args.run_dir).resolve()),
        "checkpoint_set": run.checkpoint,
        "epoch": epoch,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "n": len(x),
        "split": "test",
    }
    files = {
        "check.csv": check.table.to_csv(index=False).encode(),
        "check.png": predictive_check_png(check, sources),
    }
    folder = commit_output_set(out, CHECK, files, record)
    name = f"{Path(args.run_dir).name} (test, {run.config.get('dataset', '?')})"
    print(
        f"{name}: {len(x)} rows, {args.num_samples} replicated data sets from the posterior "
        f"predictive{' and the prior predictive' if args.prior else ''}, seed {args.seed}, "
        f"{seconds:.1f} s"
    )
    print(format_check(check.table[check.table["source"].isin(sources)]))
    print(
        "\np: two-sided predictive p-value (posterior p-values are conservative: they gather near 0.5 "
        "under a good model); extreme: p < 0.01"
    )
    print(f"wrote {folder}: check.csv, check.png (epoch {epoch}, committed as one set)")
    return 0


def format_check(table: pd.DataFrame, shown: int = SHOWN) -> str:
    """The check's rows as text: per-column statistics (extreme ones first when there are many), then
    a line per statistic with many terms (correlations, pixels) naming its most extreme terms."""
    cols = ["source", "statistic", "term", "observed", "replicated_mean", "lower", "upper"]
    lines = []
    for (source, stat), rows in table.groupby(["source", "statistic"], sort=False):
        extreme = int(rows["extreme"].sum())
        lines.append(f"{stat} ({source}): {len(rows)} terms, {extreme} extreme")
    frame = table.sort_values("p_value", kind="stable") if len(table) > shown else table
    view = frame[[*cols, "p_value", "extreme"]].head(shown).copy()
    view = view.rename(columns={"replicated_mean": "rep_mean", "lower": "rep_2.5%"})
    view = view.rename(columns={"upper": "rep_97.5%"})
    text = view.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    left = len(table) - len(view)
    more = f"\n... {left} more rows (the least extreme) in check.csv" if left > 0 else ""
    return "\n".join(lines) + "\n\n" + text + more
