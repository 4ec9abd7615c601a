"""What a run was started with: ``RUN/settings.json``, the data's provenance, and resume checks.

``settings.json`` is written before the first epoch and records the settings as the user gave
them (defaults filled in, paths made absolute), the model config, and where the data came from
(an absolute path and SHA-256 per file; a name and versions for the built-in sets). It carries
a SHA-256 of its own content, and every checkpoint set carries a copy under its manifest, so an
edited settings file is refused instead of followed. ``--resume`` appends an entry (epochs asked,
overrides) rather than rewriting what the run started with.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import MissingFileError, RunError
from ..registry import REGISTRY
from ..store.files import read_json, to_jsonable, write_json

__all__ = [
    "FIXED",
    "OVERRIDABLE",
    "RUN_FORMAT",
    "SETTINGS_FILE",
    "check_provenance",
    "data_provenance",
    "effective_settings",
    "read_settings",
    "write_settings",
]

RUN_FORMAT = "ppl_vae.run/1"
SETTINGS_FILE = "settings.json"
#: flags that may change on ``--resume`` with ``--override NAME``
OVERRIDABLE = ("objective", "lr", "batch_size", "seed", "device")
#: flags that define the model and the data: a different value is another run
FIXED = (
    "model",
    "dataset",
    "data_dir",
    "n_samples",
    "binarize",
    "latent_dim",
    "hidden_dims",
    "likelihood",
    "activation",
    "guide",
    "nets",
    "prior",
    "labelled_fraction",
    "reconstruction",
    "noise",
    "sigma",
    "mask_prob",
    "rho",
    "lam",
    "program",
    "program_args",
    "column_types",
    "column_likelihood",
    "standardize",
)


def _installed(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------ provenance
def data_provenance(args: dict[str, Any]) -> dict[str, Any]:
    """Where the data of ``load_dataset(**args)`` come from: files with hashes, or a name and versions."""
    from ..data.idx import find_idx_files
    from ..data.tabular import parse_tabular_name

    name = args["name"]
    parsed = parse_tabular_name(name)
    if parsed is not None:
        path = parsed[1].resolve()
        return {"kind": "file", "files": {str(path): _sha256_file(path)} if path.is_file() else {}}
    entry = REGISTRY.get("dataset", name)
    if entry is not None and entry.trait("idx"):
        paths = find_idx_files(name, args.get("data_dir"))
        return {
            "kind": "files",
            "files": {str(p.resolve()): _sha256_file(p) for p in paths.values()},
        }
    versions = {"ppl_vae": _installed("ppl_vae")}
    if name == "digits":
        versions["scikit-learn"] = _installed("scikit-learn")
    return {"kind": "builtin", "name": name, "versions": versions}


def check_provenance(recorded: dict[str, Any], where: str) -> None:
    """Refuse when a recorded data file is missing or has changed; warn when a built-in's version differs."""
    if recorded.get("kind") == "builtin":
        now = data_provenance({"name": recorded.get("name")})["versions"]
        changed = {
            k: (v, now.get(k)) for k, v in recorded.get("versions", {}).items() if now.get(k) != v
        }
        if changed:
            text = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            warnings.warn(
                f"{where}: the built-in dataset {recorded.get('name')!r} was made with other "
                f"versions ({text}); the data may differ",
                stacklevel=3,
            )
        return
    for path, sha in recorded.get("files", {}).items():
        p = Path(path)
        if not p.is_file():
            raise RunError(
                f"{where}: the run's data file {path} is missing; put it back (sha256 {sha[:12]}...) "
                "or train a new run on the data you have"
            )
        actual = _sha256_file(p)
        if actual != sha:
            raise RunError(
                f"{where}: the run's data file {path} has changed since the run started (sha256 "
                f"{sha[:12]}... then, {actual[:12]}... now): restore it, or train a new run on the "
                "new data"
            )


# ------------------------------------------------------------------------------ the file
def _digest(doc: dict[str, Any]) -> str:
    body = {k: doc[k] for k in ("format", "settings", "resumes")}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    ).hexdigest()


def write_settings(
    run_dir: Path, settings: dict[str, Any], resumes: list[dict[str, Any]] | None = None
) -> dict:
    """Write ``RUN/settings.json`` atomically (with the SHA-256 of its content); returns the document."""
    doc = {
        "format": RUN_FORMAT,
        "settings": to_jsonable(settings),
        "resumes": to_jsonable(resumes or []),
    }
    doc["sha256"] = _digest(doc)
    write_json(run_dir / SETTINGS_FILE, doc)
    return doc


def parse_settings(doc: dict[str, Any], path: Path | str) -> dict[str, Any]:
    """Check a settings document (format, hash, field types); returns it."""
    if doc.get("format") != RUN_FORMAT:
        raise RunError(
            f"{path}: field 'format' must be {RUN_FORMAT!r}; got {str(doc.get('format'))[:40]!r}"
        )
    for key, kind in (("settings", dict), ("resumes", list), ("sha256", str)):
        if not isinstance(doc.get(key), kind):
            raise RunError(
                f"{path}: field {key!r} is missing or not {'an object' if kind is dict else 'a ' + kind.__name__}"
            )
    if _digest(doc) != doc["sha256"]:
        raise RunError(
            f"{path} was edited after ppl_vae wrote it (its content does not match its sha256): "
            "ppl_vae will not use an edited run file; restore it (each checkpoint set under "
            "checkpoint/ holds a copy)"
        )
    _check_fields(doc["settings"], path)
    _check_data(doc["settings"]["data"], path)
    _check_resumes(doc["resumes"], path)
    return doc


def _check_fields(s: dict[str, Any], path: Path | str) -> None:
    checks: dict[str, type | tuple[type, ...]] = {
        "flags": dict,
        "model": (dict, type(None)),
        "model_kind": str,
        "data": dict,
        "epochs": int,
    }
    for key, want in checks.items():
        if not isinstance(s.get(key), want):
            raise RunError(f"{path}: field 'settings.{key}' is missing or has the wrong type")


def _check_data(data: dict[str, Any], path: Path | str) -> None:
    if (
        not isinstance(data.get("args"), dict)
        or not isinstance(data.get("provenance"), dict)
        or not isinstance(data["args"].get("name"), str)
    ):
        raise RunError(
            f"{path}: field 'settings.data' must hold 'args' (with a 'name') and 'provenance'"
        )
    files = data["provenance"].get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(v, str) and os.path.isabs(k) for k, v in files.items()
    ):
        raise RunError(
            f"{path}: field 'settings.data.provenance.files' must map absolute paths to hashes"
        )


def _check_resumes(resumes: list[Any], path: Path | str) -> None:
    for i, entry in enumerate(resumes):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("overrides", {}), dict)
            or not isinstance(entry.get("after_epoch"), int)
            or not isinstance(entry.get("target"), int)
        ):
            raise RunError(
                f"{path}: field 'resumes[{i}]' must hold 'after_epoch', 'target' and 'overrides'"
            )


def read_settings(run_dir: Path) -> dict[str, Any]:
    """The checked ``settings.json`` of a run folder."""
    path = run_dir / SETTINGS_FILE
    try:
        return parse_settings(read_json(path, RunError), path)
    except FileNotFoundError:
        raise MissingFileError(
            f"{path} is missing: {run_dir} is not a ppl_vae run folder"
        ) from None


def effective_settings(doc: dict[str, Any]) -> dict[str, Any]:
    """The flags the run trains with now: the recorded ones with every override applied."""
    flags = dict(doc["settings"]["flags"])
    for entry in doc["resumes"]:
        for name, change in entry.get("overrides", {}).items():
            flags[name] = change["to"]
    return flags


def target_epochs(doc: dict[str, Any]) -> int:
    """How many epochs the run was last asked to reach."""
    return doc["resumes"][-1]["target"] if doc["resumes"] else doc["settings"]["epochs"]


def same_start(doc: dict[str, Any], copy: bytes | None, where: str) -> None:
    """Refuse when the copy of ``settings.json`` in the checkpoint is of another run."""
    if copy is None:
        return
    try:
        other = parse_settings(json.loads(copy), f"{where} (checkpoint copy)")
    except ValueError as err:
        raise RunError(
            f"{where}: the checkpoint's copy of settings.json is unreadable: {err}"
        ) from None
    if (
        other["settings"] != doc["settings"]
        or other["resumes"] != doc["resumes"][: len(other["resumes"])]
    ):
        raise RunError(
            f"{where}: settings.json is not the one the checkpoint was trained with (the copy in "
            "the checkpoint differs): restore it from the checkpoint's copy"
        )


def annotate(history: list[dict[str, Any]], doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Copy of ``history`` with each override recorded in the first epoch trained after it."""
    out = [dict(r) for r in history]
    if doc is None:
        return out
    for entry in doc["resumes"]:
        if entry.get("overrides"):
            for r in out:
                if r.get("epoch") == entry["after_epoch"] + 1:
                    r["override"] = {k: dict(v) for k, v in entry["overrides"].items()}
    return out


def new_resume(
    doc: dict[str, Any], after_epoch: int, target: int, overrides: dict[str, Any]
) -> list[dict]:
    return [
        *doc["resumes"],
        {"after_epoch": after_epoch, "target": target, "overrides": overrides, "at": _now()},
    ]


def versions() -> dict[str, Any]:
    return {p: _installed(p) for p in ("ppl_vae", "torch", "pyro-ppl")}


def now() -> str:
    return _now()
