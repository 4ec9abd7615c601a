"""``ppl-vae impute | score``: a trained run fills the holes of a CSV, or scores its rows as outliers.

    ppl-vae impute RUN --data in.csv --out completed.csv [--multiple M] [--uncertainty cells.csv]
    ppl-vae score  RUN --data new.csv --out scores.csv

The CSV is read as ``train`` reads one (encodings, header, empty cells = missing) and encoded with the
run's schema: a column the run was trained on missing from the file, or a level it never saw, is one
error naming it. Outputs are written beside their input, never over it (``--out`` naming ``--data`` is
refused even with ``--force``), each as one atomic file (a temporary file beside it, fsynced, renamed
into place): a process killed at any moment leaves no partial file under the final name, and an output
that exists is kept unless ``--force``. One writer per folder: while one ``impute``/``score``/``sample``
writes into a folder, another is refused (:func:`ppl_vae.store.lock.lock_outputs`).
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
from typing import Literal

from .._checks import check_output_path
from ..errors import UserError
from ..store.lock import lock_outputs
from .args import positive_float, positive_int, seed


def _common(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `ppl-vae train`")
    p.add_argument(
        "--data", required=True, help=f"the CSV to {what} (empty cells are missing values)"
    )
    p.add_argument(
        "--out", required=True, help="the CSV to write (refused if it exists, unless --force)"
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--num-samples",
        "-k",
        type=positive_int,
        default=1000,
        help="importance samples K per row (default 1000)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the importance samples")
    p.add_argument(
        "--header", choices=["auto", "yes", "no"], default="auto", help="whether row 1 is a header"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")


def add_impute(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "impute",
        help="fill the empty cells of a CSV from a trained run (SNIS; SIR for --multiple)",
        description="Fill every empty cell of --data by self-normalised importance sampling from the "
        "run's model: the conditional mean for numbers (a count's mean stays a decimal), the most "
        "probable level for categories; observed cells are copied untouched. With --multiple M, "
        "--out holds M completed tables stacked, a first column 'imputation' = 1..M (sampling "
        "importance resampling; pool a statistic over them with Rubin's rules).",
    )
    _common(p, "complete")
    p.add_argument(
        "--multiple", type=positive_int, default=None, metavar="M", help="M completed tables"
    )
    p.add_argument(
        "--uncertainty",
        default=None,
        metavar="FILE",
        help="also write one row per imputed cell: row, column, value, sd (predictive), se (Monte "
        "Carlo), ess, the row's k-hat and whether it is reliable",
    )
    p.set_defaults(func=_cmd_impute)


def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score the rows of a CSV by log p(x_obs), with s.e. and k-hat (outliers first)",
        description="Importance-weighted log p(x_obs) per row of --data (nats, over its observed "
        "cells), its Monte Carlo s.e. and PSIS k-hat; rows ranked from least likely, only where the "
        "estimate is reliable (k-hat <= 0.7 and s.e. <= --max-se); the others are flagged, unranked.",
    )
    _common(p, "score")
    p.add_argument(
        "--max-se",
        type=positive_float,
        default=0.25,
        help="largest s.e. (nats) of a ranked row (default 0.25)",
    )
    p.set_defaults(func=_cmd_score)


# ---------------------------------------------------------------- shared steps
def _outputs(args: argparse.Namespace, *extra: str | None) -> list[Path]:
    data = Path(args.data)
    if not data.is_file():
        raise UserError(f"--data: {str(data)!r} is not a file")
    paths = []
    for flag, value in (("--out", args.out), *(("--uncertainty", e) for e in extra)):
        if value is None:
            continue
        path = check_output_path(value, flag, kind="file", force=args.force)
        if path.exists() and os.path.samefile(path, data):
            raise UserError(
                f"{flag} {str(path)!r} is the input --data: ppl-vae writes beside its input, never over "
                "it; name another file"
            )
        paths.append(path)
    if len({p.resolve() for p in paths}) != len(paths):
        raise UserError("--out and --uncertainty name the same file: give each its own")
    return paths


def _load(args: argparse.Namespace):
    from ..data.read import read_csv_frame
    from ..runs import load_run

    choices: dict[str, bool | Literal["auto"]] = {"auto": "auto", "yes": True, "no": False}
    header = choices[args.header]
    frame = read_csv_frame(Path(args.data), header=header)
    run = load_run(args.run_dir, device=args.device, load_data=False)
    return run.model, frame


def _write_csv(path: Path, frame, force: bool, index: bool = False) -> None:
    from ..store.files import write_bytes

    buf = io.StringIO()
    frame.to_csv(buf, index=index)
    write_bytes(path, buf.getvalue().encode(), replace=force)


def _cmd_impute(args: argparse.Namespace) -> int:
    paths = _outputs(args, args.uncertainty)
    with lock_outputs(
        *paths
    ):  # one writer per folder (a second impute, score or sample is refused)
        return _impute(args, paths)


def _impute(args: argparse.Namespace, paths: list[Path]) -> int:
    import pandas as pd

    from ..analysis.imputation import impute

    model, frame = _load(args)
    out = impute(model, frame, args.num_samples, args.multiple, seed=args.seed)
    if args.uncertainty is not None:
        _write_csv(paths[1], _cells_table(out), args.force)
    if args.multiple:
        stacked = pd.concat(
            [t.assign(imputation=m + 1) for m, t in enumerate(out.tables)], ignore_index=True
        )
        table = stacked[["imputation", *out.completed.columns]]
    else:
        table = out.completed
    _write_csv(paths[0], table, args.force)
    s = out.summary
    what = f"{args.multiple} completed tables" if args.multiple else "the completed table"
    print(
        f"imputed {s['n_imputed_cells']} cells in {s['n_rows']} rows ({s['missing_fraction']['all']:.1%} "
        f"of the modelled cells), K={s['num_samples']}, seed {s['seed']}; smallest cell ESS "
        f"{s['min_cell_ess']:.0f}; {s['n_unreliable_rows']} row(s) with k-hat > 0.7"
    )
    print(
        f"wrote {what} to {paths[0]}" + (f" and the cells to {paths[1]}" if len(paths) > 1 else "")
    )
    return 0


def _cells_table(out):
    import pandas as pd

    parts = []
    for c in out.completed.columns:
        if c not in out.missing.columns:
            continue
        hole = out.missing[c].to_numpy()
        if not hole.any():
            continue
        rows = out.completed.index[hole]
        parts.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "column": c,
                    "value": out.completed.loc[rows, c].to_numpy(),
                    "sd": out.sd.loc[rows, c].to_numpy(),
                    "se": out.se.loc[rows, c].to_numpy(),
                    "ess": out.ess.loc[rows, c].to_numpy(),
                    "khat": out.rows.loc[rows, "khat"].to_numpy(),
                    "reliable": out.rows.loc[rows, "reliable"].to_numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _cmd_score(args: argparse.Namespace) -> int:
    paths = _outputs(args)
    with lock_outputs(*paths):
        return _score(args, paths)


def _score(args: argparse.Namespace, paths: list[Path]) -> int:
    from ..analysis.scores import score

    model, frame = _load(args)
    out = score(model, frame, args.num_samples, seed=args.seed, max_se=args.max_se)
    ranked = out.ranked()
    _write_csv(paths[0], ranked.rename_axis(ranked.index.name or "row"), args.force, index=True)
    s = out.summary
    print(
        f"scored {s['n']} rows (K={s['num_samples']}, seed {s['seed']}): {s['n'] - s['n_flagged']} ranked, "
        f"{s['n_flagged']} flagged as unreliable (k-hat > 0.7 or se > {s['max_se']:g}), unranked"
    )
    top = out.top(5)
    if len(top):
        print("least likely rows: " + ", ".join(f"{i} ({v:.2f})" for i, v in top["log_px"].items()))
    print(f"wrote {paths[0]}")
    return 0
