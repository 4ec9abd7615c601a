"""The building blocks of a run folder: the model a run's flags describe (sized against memory first), the
objective checked on it before anything is written, the data it names, and what is already in the way."""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from .._checks import (
    ACTIVATION_BYTES_PER_FLOAT,
    check_memory,
    format_bytes,
    mlp_parameters,
    training_bytes,
)
from ..errors import RunError, RunExistsError, UserError
from ..guides import encoder_outputs
from ..registry import REGISTRY
from ..store.checkpoint import POINTER
from ..store.files import refuse_links
from ..store.lock import LOCK_FILE, refuse_if_locked
from .flags import AUTOENCODERS, HVAE_SIZES
from .settings import SETTINGS_FILE

__all__ = [
    "as_ints",
    "check_model_size",
    "check_objective",
    "objective_particles",
    "folder_state",
    "load_run_data",
    "mlp_widths",
    "model_from_flags",
    "older_run",
    "rebuild_model",
    "refuse_existing",
    "refuse_run_links",
    "remove_partial",
    "run_data_args",
    "training_memory",
    "training_steps",
    "user_call",
]


def user_call(fn, *args, **kwargs):
    """Call a constructor with the user's values; its ValueError/TypeError is about those values."""
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from None


def as_ints(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    return None


def _hvae_widths(config: dict[str, Any], d_in: int) -> tuple[list[list[int]], str] | None:
    """The four dense stacks of a two-layer hierarchical VAE (x - z1 - z2 and back)."""
    latent, hidden = as_ints(config.get("latent_dims")), config.get("hidden_dims")
    layers = [as_ints(h) for h in hidden] if isinstance(hidden, (list, tuple)) else []
    if latent is None or len(latent) != 2 or len(layers) != 2:
        return None
    (d1, d2), (h1, h2) = latent, layers
    if h1 is None or h2 is None:
        return None
    widths = [
        [d_in, *h1, 2 * d1],
        [d1, *h2, 2 * d2],
        [d2, *reversed(h2), 2 * d1],
        [d1, *reversed(h1), 2 * d_in],
    ]
    return widths, f"input {d_in}, latent_dims {latent}, hidden_dims {h1} and {h2}"


def mlp_widths(config: dict[str, Any]) -> tuple[list[list[int]], str] | None:
    """The dense layers of a model described by its config (class, sizes), as width lists, and the sizes
    in words; None when the config does not say (an unknown class, odd types: the constructor decides)."""
    cls, d_in = config.get("class", "VAE"), config.get("input_dim")
    if not isinstance(d_in, int):
        return None
    if cls == "HierarchicalVAE":
        return _hvae_widths(config, d_in)
    d, hidden = config.get("latent_dim"), as_ints(config.get("hidden_dims"))
    if not isinstance(d, int) or hidden is None:
        return None
    words = f"input {d_in}, hidden_dims {hidden}, latent_dim {d}"
    if cls == "SemiSupervisedVAE":
        classes = config.get("num_classes")
        c = classes if isinstance(classes, int) else 10
        widths = [
            [d_in, *hidden, c],
            [d_in + c, *hidden, 2 * d],
            [d + c, *reversed(hidden), 2 * d_in],
        ]
        return widths, f"{words}, {c} classes"
    try:  # the guide family's declared encoder width (an odd guide: the constructor decides)
        encoder_out = encoder_outputs(config.get("guide") or "meanfield", d)
    except UserError:
        return None
    return [[d_in, *hidden, encoder_out], [d, *reversed(hidden), 2 * d_in]], words


def training_memory(
    config: dict[str, Any],
    batch_size: int,
    *,
    rows: int | None = None,
    particles: int = 1,
    steps: int | None = None,
) -> dict[str, Any] | None:
    """What training the model of ``config`` allocates at its peak, in bytes: ``weights`` (the parameters,
    their gradients, Adam's moments and temporaries, the engine's copies: the compiled whole step's when
    the run reaches ``FUSE_AFTER_STEPS`` steps or ``steps`` is unknown) and ``activations`` (a batch of
    ``min(batch_size, rows)`` rows, a batch is never larger than the data, times ``particles`` samples of
    the layers); also ``params``, ``batch``, ``fused`` and ``words``. None when the config does not say.
    """
    from ..train.fast import FUSE_AFTER_STEPS

    found = mlp_widths(config)
    if found is None:
        return None
    widths, words = found
    params = sum(mlp_parameters(w) for w in widths)
    batch = min(batch_size, rows) if rows else batch_size
    # the encoder runs once per row; every layer after the latent draw once per sample of z
    floats = config["input_dim"] + sum(widths[0]) + particles * sum(sum(w) for w in widths[1:])
    fused = steps is None or steps >= FUSE_AFTER_STEPS
    return {
        "params": params,
        "batch": batch,
        "fused": fused,
        "words": words,
        "weights": training_bytes(params, fused=fused),
        "activations": ACTIVATION_BYTES_PER_FLOAT * batch * floats,
    }


def check_model_size(
    config: dict[str, Any],
    batch_size: int,
    what: str,
    *,
    rows: int | None = None,
    particles: int = 1,
    steps: int | None = None,
) -> None:
    """Refuse, before allocating, a model whose training (:func:`training_memory`) would not fit in
    memory with a margin, naming what to shrink: the batch when its activations dominate, else the layers.
    """
    m = training_memory(config, batch_size, rows=rows, particles=particles, steps=steps)
    if m is None:
        return
    batch = m["batch"]
    if m["activations"] > m["weights"]:
        samples, fewer = (
            (f" x {particles} samples", " or fewer samples (k)") if particles > 1 else ("", "")
        )
        advice = (
            f"choose a smaller --batch-size{fewer} (the activations of {batch:,} rows{samples} "
            "dominate)"
        )
    elif config.get("class") == "HierarchicalVAE":
        advice = "the sizes of model 'hvae' are fixed (Burda et al.): use fewer input dimensions, or --model vae"
    else:
        advice = "choose smaller --hidden-dims / --latent-dim"
    check_memory(
        m["weights"] + m["activations"],
        f"{what} ({m['words']}: {m['params']:,} parameters, trained with Adam: "
        f"{format_bytes(m['weights'])}{' with the compiled whole step' if m['fused'] else ''}; "
        f"activations of a batch of {batch:,} rows: {format_bytes(m['activations'])})",
        advice,
        margin=True,
    )


def objective_particles(objective: Any) -> int:
    """Samples of z per data point that an objective spec draws (``iwae:k=5``: 5; default 1)."""
    if not isinstance(objective, str):
        return 1
    from ..objectives import parse_objective

    try:
        params = parse_objective(objective).params
    except (UserError, TypeError, ValueError):
        return 1  # refused later, by name, where the objective is built
    value = params.get("k", params.get("particles", 1))
    return value if isinstance(value, int) and value > 0 else 1


def training_steps(epochs: int | None, rows: int, batch_size: int) -> int | None:
    """Optimiser steps of a run of ``epochs`` over ``rows`` (None when ``epochs`` is unknown)."""
    return None if epochs is None else epochs * max(1, math.ceil(rows / max(1, batch_size)))


def _vae_spec(flags: dict[str, Any]) -> str:
    """The ``vae`` model spec of the flags: its nets and its prior (``vae:nets=conv,prior=mog:k=10``)."""
    options = ["nets=conv"] if flags.get("nets", "mlp") == "conv" else []
    if flags.get("prior", "standard_normal") != "standard_normal":
        options.append(f"prior={flags['prior']}")
    return "vae" + (":" + ",".join(options) if options else "")


def _class_name(kind: str) -> str:
    """The class a model name builds (its registry trait ``cls``), for the size check before building."""
    entry = REGISTRY.get("model", kind)
    return kind if entry is None else entry.trait("cls").__name__


def model_from_flags(
    flags: dict[str, Any], meta: Any, epochs: int | None = None
) -> torch.nn.Module:
    """The model the flags describe for the data of ``meta`` (a :class:`~ppl_vae.data.DatasetMeta`),
    sized against memory first for a run of ``epochs``; the user's own program for ``--program``."""
    if flags.get("program") is not None:  # ppl-vae train --program module:Name
        from ..program_import import ImportedProgram

        return ImportedProgram(flags["program"], flags.get("program_args"))
    kind, input_dim = flags["model"], meta.input_dim
    hidden = None if flags["hidden_dims"] is None else tuple(flags["hidden_dims"])
    sizes = {
        "class": _class_name(kind),
        "input_dim": input_dim,
        "latent_dim": flags["latent_dim"],
        "hidden_dims": hidden,
        "guide": flags.get("guide"),
        "num_classes": meta.num_classes,
        **(HVAE_SIZES if kind == "hvae" else {}),
    }
    rows = getattr(meta, "n_train", None)
    check_model_size(
        sizes,
        flags["batch_size"],
        f"a {kind}",
        rows=rows,
        particles=objective_particles(flags.get("objective")),
        steps=training_steps(epochs, rows, flags["batch_size"]) if rows else None,
    )
    if kind not in AUTOENCODERS:
        from ..models.names import make_model
        from .tables import table_likelihood

        spec = {
            "vae": _vae_spec(flags),
            "hvae": f"hvae:activation={flags['activation']}",
            "m2": f"m2:labelled={flags.get('labelled_fraction')!r}",
        }[kind]
        image = meta.image_shape
        sizes = {} if kind == "hvae" else {"latent_dim": flags["latent_dim"], "hidden_dims": hidden}
        return user_call(
            make_model,
            spec,
            input_dim,
            flags.get("guide", "meanfield"),
            **sizes,
            **table_likelihood(flags, meta),
            activation=flags["activation"],
            image_shape=(1, *image) if image is not None and len(image) == 2 else image,
            num_classes=meta.num_classes,
        )
    from ..autoencoders import make_autoencoder

    options = {
        k: flags[v]
        for k, v in (
            ("reconstruction", "reconstruction"),
            ("noise", "noise"),
            ("sigma", "sigma"),
            ("p", "mask_prob"),
            ("rho", "rho"),
            ("lam", "lam"),
        )
        if flags[v] is not None
    }
    return user_call(
        make_autoencoder,
        kind,
        input_dim,
        flags["latent_dim"],
        hidden_dims=hidden,
        activation=flags["activation"],
        **options,
    )


def rebuild_model(
    config: dict[str, Any],
    batch_size: int,
    where: str,
    *,
    rows: int | None = None,
    objective: Any = None,
    epochs: int | None = None,
) -> torch.nn.Module:
    """The run's recorded model config rebuilt (sized against memory first, for ``epochs`` in all)."""
    from ..models import build_model

    check_model_size(
        config,
        batch_size,
        "the run's model",
        rows=rows,
        particles=objective_particles(objective),
        steps=training_steps(epochs, rows, batch_size) if rows else None,
    )
    try:
        return build_model(config)
    except (TypeError, ValueError, KeyError) as err:
        raise RunError(f"{where}: field 'settings.model' is unusable: {err}") from None


def check_objective(model: Any, data: Any, objective: str) -> None:
    """Before anything is written: refuse an objective the library would refuse for this program at its
    first step (e.g. 'analytic' or 'iwae' for m2, whose class label has no reparameterised sampler), with
    the library's own message (a ProgramError naming the sites); a model that needs labels the data lack
    is refused here too (its ``dataset_inputs`` hook)."""
    from ..autoencoders import Autoencoder

    if isinstance(model, Autoencoder) or objective is None:
        return
    from ..objectives import parse_objective
    from ..params import param_scope
    from ..programs import INSPECT_ROWS, as_program, inspect_program

    hook = getattr(model, "dataset_inputs", None)
    rows = (data.train, *hook(data, "train")) if callable(hook) else (data.train,)
    program = as_program(model)
    rows = program.check_data(
        tuple(t[:INSPECT_ROWS] for t in rows), "data.train"
    )  # fit's own check first
    with torch.random.fork_rng(), param_scope(program):
        info = inspect_program(program, rows)
    parse_objective(objective).check(info)


def run_data_args(flags: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": flags["dataset"],
        "binarize": flags["binarize_resolved"],
        "seed": flags["seed"],
        "data_dir": flags["data_dir"],
        "n_samples": flags["n_samples"],
        # a table's options only where given, so the data arguments of every other run stay as they were
        **({"types": flags["column_types"]} if flags.get("column_types") else {}),
        **({"standardize": True} if flags.get("standardize") else {}),
    }


def load_run_data(args: dict[str, Any]):
    from ..data import load_dataset

    return load_dataset(**args)


def folder_state(path: Path) -> str:
    """``"absent"``, ``"empty"``, ``"run"`` (ours) or ``"foreign"`` (something else is there)."""
    if not path.exists():
        return "absent"
    entries = [e for e in os.listdir(path) if e != LOCK_FILE and not _PARTIAL.fullmatch(e)]
    if not entries:
        return "empty"
    if (
        (path / SETTINGS_FILE).is_file()
        or (path / "checkpoint" / POINTER).is_file()
        or older_run(path)
    ):
        return "run"
    return "foreign"


#: a file of ours half-written when a process died (the temporary name of an atomic write)
_PARTIAL = re.compile(
    r"\.(settings\.json|metrics\.json|metrics\.csv|mlflow\.json)\.(?:\d+\.)?[A-Za-z0-9_]+\.tmp"
)


def remove_partial(path: Path) -> None:
    """Under the lock: remove the temporary files of our atomic writes that a killed process left."""
    for name in os.listdir(path):
        if _PARTIAL.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path / name)


def refuse_run_links(path: Path) -> None:
    """Before a resumed run writes: no file or folder it writes in ``path`` may be a symbolic link."""
    from .logs import METRICS_CSV, METRICS_FILE, TENSORBOARD_DIR

    refuse_links(path, (SETTINGS_FILE, METRICS_FILE, METRICS_CSV, "checkpoint", TENSORBOARD_DIR))
    refuse_links(path / "checkpoint", (POINTER, LOCK_FILE))


def older_run(path: Path) -> bool:
    """A run folder of ppl_vae 0.1 (metrics.json beside checkpoint/config.json, no settings.json)."""
    return (path / "metrics.json").is_file() and (path / "checkpoint" / "config.json").is_file()


def refuse_existing(path: Path) -> None:
    state = folder_state(path)
    if state == "run":
        refuse_if_locked(path)
    if state == "run":
        raise RunExistsError(
            f"{str(path)!r} already holds a run: pass --resume to continue it, or choose "
            "another --out"
        )
    if state == "foreign":
        shown = sorted(e for e in os.listdir(path) if e != LOCK_FILE and not _PARTIAL.fullmatch(e))
        raise RunExistsError(
            f"{str(path)!r} exists and holds files ppl_vae did not make ({', '.join(shown[:3])}"
            f"{', ...' if len(shown) > 3 else ''}): choose another --out (nothing was changed)"
        )
