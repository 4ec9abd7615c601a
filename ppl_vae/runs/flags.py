"""The settings of a run as flags: defaults, checks, canonical values, and what ``--resume`` may change.

A flag left out is :data:`UNSET` (not its default), so a resumed run can tell "not given" (use
the recorded value) from "given" (it must agree with the record, or be overridden explicitly).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._checks import check_finite_number, check_int, check_positive_int
from ..errors import ArgumentTypeError, RunError, UserError
from ..registry import REGISTRY
from .settings import FIXED, OVERRIDABLE
from .tables import check_table_flags, column_mapping, is_csv_table

__all__ = ["DEFAULTS", "UNSET", "canonical", "check_overrides", "resolve_binarize"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: "not given": the default for a new run, the recorded value on ``--resume``
UNSET: Any = _Unset()

DEFAULTS: dict[str, Any] = {
    "model": "vae",
    "dataset": "digits",
    "data_dir": None,
    "n_samples": None,
    "binarize": "auto",
    "latent_dim": 8,
    "hidden_dims": [256],
    "likelihood": "auto",
    "activation": "relu",
    "reconstruction": None,
    "noise": None,
    "sigma": None,
    "mask_prob": None,
    "rho": None,
    "lam": None,
    "objective": "analytic",
    "lr": 1e-3,
    "batch_size": 128,
    "seed": 0,
    "device": "auto",
    "guide": "meanfield",
    "nets": "mlp",
    "prior": "standard_normal",
    "labelled_fraction": None,
    "program": None,
    "program_args": None,
    "column_types": None,
    "column_likelihood": None,
    "standardize": False,
}
AUTOENCODERS = ("ae", "dae", "sae", "cae")
#: models trained by SVI on a bound (ppl_vae.models.names): the VAE, two stochastic layers, M2
VAE_MODELS = ("vae", "hvae", "m2")
NETS = ("mlp", "conv")
#: the sizes of ``hvae`` (Burda et al., 2015), fixed: --latent-dim and --hidden-dims do not apply
HVAE_SIZES = {"latent_dims": (100, 50), "hidden_dims": ((200, 200), (100, 100))}
#: M2's labelled fraction when none is given (as ppl_vae.models.names.make_model)
M2_LABELLED = 0.1
AE_OPTIONS = {
    "reconstruction": "reconstruction",
    "noise": "noise",
    "sigma": "sigma",
    "p": "mask_prob",
    "rho": "rho",
    "lam": "lam",
}


def is_image_dataset(dataset: str) -> bool:
    """Whether ``dataset`` names a registered dataset of images (its ``images`` trait)."""
    entry = REGISTRY.get("dataset", dataset)
    return entry is not None and bool(entry.trait("images"))


def default_likelihood(dataset: str) -> str:
    """Bernoulli (after binarisation) for the image sets; for a CSV table ``"table"``, a family per column
    chosen by its type (:data:`ppl_vae.likelihoods.table.AUTO`); Gaussian for points and arrays."""
    if is_image_dataset(dataset):
        return "bernoulli"
    return "table" if is_csv_table(dataset) else "gaussian"


def resolve_binarize(binarize: str | None, likelihood: str) -> str | None:
    """``"auto"``: dynamic binarisation where the likelihood is Bernoulli, none otherwise."""
    if binarize == "auto":
        return "dynamic" if likelihood == "bernoulli" else None
    if binarize in ("none", "", None):
        return None
    return binarize


def _dataset_name(name: object) -> str:
    from ..data.tabular import parse_tabular_name

    if not isinstance(name, str) or not name:
        raise ArgumentTypeError(f"dataset must be a name or a file path; got {name!r}")
    parsed = parse_tabular_name(name)
    if parsed is None:
        return name
    fmt, path = parsed
    return f"{fmt}:{path.expanduser().resolve()}"


def canonical(name: str, value: Any) -> Any:
    """The checked, canonical form of flag ``name`` (paths absolute, objective spelled one way)."""
    if value is None and DEFAULTS.get(name, 0) is None:
        return None
    check = _CANONICAL.get(name)
    if check is not None:
        return check(name, value)
    return value if isinstance(value, str) else _bad(name, value)


def _labelled_fraction(name: str, value: Any) -> float:
    value = check_finite_number(value, name)
    if not 0 < value <= 1:
        raise UserError(
            f"labelled_fraction (--labelled-fraction) is the share of training points that keep "
            f"their label, in (0, 1]; got {value:g}"
        )
    return value


def _guide(name: str, value: Any) -> str:
    from ..guides import canonical_guide

    return canonical_guide(value)


def _prior(name: str, value: Any) -> str:
    from ..registry import REGISTRY

    return str(REGISTRY.parse("prior", value))


def _choice(choices: tuple[str, ...], what: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        value = "none" if value is None and name == "binarize" else value
        if value not in choices:
            raise UserError(f"{name} must be {what}; got {value!r}")
        return value

    return check


def _hidden_dims(name: str, value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ArgumentTypeError(
            f"hidden_dims must be a sequence of positive integers; got {value!r}"
        )
    return [check_positive_int(h, "hidden_dims") for h in value]


def _data_dir(name: str, value: Any) -> str:
    if not isinstance(value, (str, Path)):
        _bad(name, value)
    return str(Path(value).expanduser().resolve())


def _program(name: str, value: Any) -> Any:
    from ..program_import import check_program_args, check_program_spec

    return check_program_spec(value) if name == "program" else check_program_args(value)


def _standardize(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"standardize must be True or False; got {value!r}")
    return value


def _device(name: str, value: Any) -> str:
    from .._checks import check_device

    check_device(value)
    return str(value)


#: flag -> its check (the flags not named here are strings, checked where they are used)
_CANONICAL: dict[str, Callable[[str, Any], Any]] = {
    **{
        k: lambda name, v: check_positive_int(v, name)
        for k in ("latent_dim", "batch_size", "n_samples")
    },
    "seed": lambda name, v: check_int(v, "seed", minimum=0, maximum=2**32 - 1),
    "lr": lambda name, v: check_finite_number(v, "lr", positive=True),
    **{
        k: lambda name, v: check_finite_number(v, name)
        for k in ("sigma", "mask_prob", "rho", "lam")
    },
    "labelled_fraction": _labelled_fraction,
    "guide": _guide,
    "prior": _prior,
    "nets": _choice(NETS, "'mlp' (dense layers) or 'conv' (convolutions, for images)"),
    "hidden_dims": _hidden_dims,
    "dataset": lambda name, v: _dataset_name(v),
    "data_dir": _data_dir,
    "binarize": _choice(
        ("auto", "dynamic", "static", "none"), "'auto', 'dynamic', 'static' or 'none'"
    ),
    "model": _choice(
        (*VAE_MODELS, *AUTOENCODERS),
        "'vae', 'hvae', 'm2' (trained by SVI) or 'ae', 'dae', 'sae', 'cae' (autoencoders)",
    ),
    "objective": lambda name, v: objective_spec(v),
    "program": _program,
    "program_args": _program,
    "column_types": lambda name, v: column_mapping(name, v),
    "column_likelihood": lambda name, v: column_mapping(name, v),
    "standardize": _standardize,
    "device": _device,
}


def _bad(name: str, value: Any):
    raise ArgumentTypeError(f"{name} must be a string; got {type(value).__name__} {value!r}")


def objective_spec(value: object) -> str:
    """The objective as the registry spells it; an unknown name is a user error."""
    from ..objectives import parse_objective

    if not isinstance(value, str):
        spec = getattr(value, "spec", None)
        if isinstance(spec, str):
            return spec
        raise ArgumentTypeError(
            f"objective must be a string like 'analytic' or 'iwae:k=5'; got {value!r}"
        )
    try:
        return parse_objective(value).spec
    except UserError:
        raise
    except (ValueError, TypeError, KeyError) as err:  # the registry's own message names the choices
        raise UserError(str(err).strip("'\"")) from None


def given_flags(ae_options: dict[str, Any] | None, **values: Any) -> dict[str, Any]:
    """The flags a caller gave (UNSET and, for the objective, None mean "not given"), canonical."""
    given = {}
    for name, value in values.items():
        if value is UNSET or (name == "objective" and value is None):
            continue
        given[name] = canonical(name, value)
    for key, value in (ae_options or {}).items():
        if key not in AE_OPTIONS:
            raise UserError(f"unknown autoencoder option {key!r}; known: {sorted(AE_OPTIONS)}")
        if value is not None and value is not UNSET:
            given[AE_OPTIONS[key]] = canonical(AE_OPTIONS[key], value)
    return given


def complete(given: dict[str, Any]) -> dict[str, Any]:
    """Flags of a new run: the given ones over the defaults, checked for consistency."""
    flags = {**DEFAULTS, **given}
    if flags["model"] in VAE_MODELS:
        lik = _complete_svi(flags, given)
    else:
        lik = _complete_autoencoder(flags, given)
    flags["binarize_resolved"] = resolve_binarize(flags["binarize"], lik)
    return flags


def _complete_svi(flags: dict[str, Any], given: dict[str, Any]) -> str:
    """A model trained by SVI (vae, hvae, m2): its defaults filled in; returns the likelihood's name."""
    model = flags["model"]
    ae_given = sorted(k for k in AE_OPTIONS.values() if k in given)
    if ae_given:
        raise UserError(
            f"options {ae_given} are for autoencoders (model 'ae', 'dae', 'sae', 'cae'), "
            f"not for model {model!r}"
        )
    _check_program_flags(model, flags, given)
    _check_imported(flags, given)
    if model == "m2":
        if flags["labelled_fraction"] is None:
            flags["labelled_fraction"] = M2_LABELLED
        if "objective" not in given:
            flags["objective"] = "enum"  # sums the unlabelled points' class out exactly
    if (
        model == "hvae"
    ):  # Burda et al.'s sizes: none of the flags' (recorded as none, not as unused values)
        flags["latent_dim"] = flags["hidden_dims"] = None
        if "activation" not in given:
            flags["activation"] = "tanh"  # and their units
    if flags["likelihood"] == "auto":
        flags["likelihood"] = default_likelihood(flags["dataset"])
        if model == "m2" and flags["likelihood"] == "table":
            flags["likelihood"] = "gaussian"  # one family for every column (said at the first step)
    check_table_flags(flags, given)
    return flags["likelihood"].partition(":")[0]


def _complete_autoencoder(flags: dict[str, Any], given: dict[str, Any]) -> str:
    """An autoencoder: no objective, likelihood or program flags; returns the likelihood its
    reconstruction error corresponds to (for binarisation)."""
    if "objective" in given or given.get("likelihood", "auto") != "auto":
        raise UserError(
            f"objective and likelihood are for the VAE; model {flags['model']!r} is trained on its "
            "reconstruction error (choose it with reconstruction='bce'|'mse')"
        )
    program = sorted(k for k in ("guide", "nets", "prior", "labelled_fraction") if k in given)
    if program:
        raise UserError(
            f"{', '.join(_flag(k) for k in program)}: for the models trained by SVI (vae, hvae, "
            f"m2); model {flags['model']!r} is an autoencoder"
        )
    table = sorted(k for k in ("column_types", "column_likelihood") if given.get(k))
    if "column_likelihood" in table:
        raise UserError(
            f"--column-likelihood: model {flags['model']!r} is an autoencoder, trained on its "
            "reconstruction error; a family per column is for --model vae or hvae"
        )
    flags["objective"] = None
    flags["likelihood"] = None
    if flags["reconstruction"] in ("auto", None):
        flags["reconstruction"] = "bce" if is_image_dataset(flags["dataset"]) else "mse"
    return "bernoulli" if flags["reconstruction"] == "bce" else "gaussian"


def _check_program_flags(model: str, flags: dict[str, Any], given: dict[str, Any]) -> None:
    """The guide, nets, labelled fraction and sizes each model takes (see ppl_vae.models.names)."""
    if flags["guide"] != "meanfield" and model != "vae":
        raise UserError(
            f"--guide {flags['guide']}: model {model!r} has a mean-field guide per latent site; guide "
            "families (fullrank, iaf:n=K) are for --model vae"
        )
    if flags["nets"] != "mlp" and model != "vae":
        raise UserError(
            f"--nets {flags['nets']}: model {model!r} has dense (mlp) networks; --nets conv is for "
            "--model vae"
        )
    if flags.get("prior", "standard_normal") != "standard_normal" and model != "vae":
        raise UserError(
            f"--prior {flags['prior']}: model {model!r} has a standard normal prior; learned priors "
            "(mog:k=K, vamp:k=K) are for --model vae"
        )
    if flags["labelled_fraction"] is not None and model != "m2":
        raise UserError(
            f"--labelled-fraction is for --model m2 (semi-supervised); model {model!r} uses no labels"
        )
    sizes = sorted(k for k in ("latent_dim", "hidden_dims") if k in given)
    if model == "hvae" and sizes:
        raise UserError(
            f"{', '.join(_flag(k) for k in sizes)}: model 'hvae' has Burda et al.'s fixed sizes "
            "(latent 100 and 50, hidden 200-200 and 100-100); leave them out"
        )


def _check_imported(flags: dict[str, Any], given: dict[str, Any]) -> None:
    """``--program module:Name`` is the whole model: the flags that build ppl_vae's own are refused beside it."""
    if flags.get("program") is None:
        if flags.get("program_args") is not None:
            raise UserError(
                "--program-args needs --program module:Name (the class or factory they go to)"
            )
        return
    clash = sorted(
        k
        for k in (
            "model",
            "latent_dim",
            "hidden_dims",
            "guide",
            "nets",
            "prior",
            "labelled_fraction",
            "likelihood",
            "activation",
        )
        if k in given
    )
    if clash:
        raise UserError(
            f"{', '.join(_flag(k) for k in clash)}: build ppl_vae's own models; with --program "
            f"{flags['program']} the program is the model (give its arguments with --program-args JSON)"
        )
    flags["latent_dim"] = flags["hidden_dims"] = None


def check_overrides(
    given: dict[str, Any], recorded: dict[str, Any], override: list[str]
) -> dict[str, Any]:
    """On ``--resume``: the overrides to record, ``{name: {"from": old, "to": new}}``.

    A given flag that differs from the record is refused unless ``override`` names it; the
    model, data and architecture cannot be overridden.
    """
    unknown = sorted(set(override) - set(OVERRIDABLE) - set(FIXED))
    if unknown:
        raise UserError(
            f"--override {', '.join(unknown)}: unknown setting; these can be overridden on "
            f"resume: {', '.join(OVERRIDABLE)}"
        )
    fixed = sorted(set(override) & set(FIXED))
    if fixed:
        raise RunError(
            f"--override {', '.join(fixed)}: the model, data and architecture of a run cannot "
            "change; start a new run with another --out"
        )
    missing = sorted(n for n in override if n not in given)
    if missing:
        raise UserError(
            f"--override {', '.join(missing)} needs the new value too, e.g. --override lr --lr 3e-4"
        )
    conflicts, changes = [], {}
    for name, value in given.items():
        old = recorded.get(name, DEFAULTS.get(name))
        value = _resolved(name, value, recorded)
        if _same(value, old):
            continue
        if name in override:
            changes[name] = {"from": old, "to": value}
        elif name in FIXED:
            conflicts.append(
                f"{_flag(name)} {_show(value)} (the run has {_show(old)}; the model, data and "
                "architecture cannot change: start a new run with another --out)"
            )
        else:
            conflicts.append(
                f"{_flag(name)} {_show(value)} differs from the run's {name} {_show(old)} "
                f"(to change it from now on: --override {name} {_flag(name)} {_show(value)})"
            )
    if conflicts:
        raise RunError(
            "--resume continues the run with its recorded settings; refused: "
            + "; ".join(conflicts)
        )
    return changes


def _resolved(name: str, value: Any, recorded: dict[str, Any]) -> Any:
    """A given ``"auto"`` as the recorded run resolved it (its likelihood or reconstruction error)."""
    if value == "auto" and name == "likelihood":
        if recorded.get("model", "vae") not in VAE_MODELS:
            return None
        lik = default_likelihood(recorded["dataset"])
        return "gaussian" if lik == "table" and recorded.get("model") == "m2" else lik
    if value == "auto" and name == "reconstruction" and recorded.get("model") in AUTOENCODERS:
        return "bce" if is_image_dataset(recorded["dataset"]) else "mse"
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=0, abs_tol=0)
    return a == b


def _flag(name: str) -> str:
    return "--column-type" if name == "column_types" else "--" + name.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)
