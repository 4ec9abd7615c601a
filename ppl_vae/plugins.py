"""Registry entries from outside ppl_vae: the modules that register your likelihoods, objectives, guide
families, priors, models or datasets, imported by the command line before it builds its ``--help``.

In Python, importing your module registers its entries (``import my_likelihoods``); the ``ppl-vae``
command imports the modules named in one of two places:

* the environment variable ``PPL_VAE_PLUGINS``: module names separated by commas
  (``PPL_VAE_PLUGINS=my_likelihoods,lab.objectives``), imported from the current folder first, as
  ``--program`` imports a program;
* an installed package's entry points in the group ``ppl_vae.plugins`` (in its ``pyproject.toml``:
  ``[project.entry-points."ppl_vae.plugins"]`` ``mine = "my_pkg.entries"``; ``"my_pkg.entries:setup"``
  imports the module and calls ``setup()``).

A module that fails to import is one :class:`PluginError` line naming it and where it was named (the CLI
exits 2). Importing twice is harmless (Python imports a module once), so nothing is remembered here.

Example:
    >>> from ppl_vae.plugins import load_plugins
    >>> isinstance(load_plugins(env=""), list)  # nothing named: the installed entry points only
    True
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from .errors import UserError

__all__ = ["ENV", "GROUP", "PluginError", "load_plugins"]

#: The environment variable naming plugin modules (comma-separated).
ENV = "PPL_VAE_PLUGINS"
#: The entry-point group of installed plugins.
GROUP = "ppl_vae.plugins"


class PluginError(UserError):
    """A plugin module named in ``PPL_VAE_PLUGINS`` or an entry point failed to import."""


def _import(module: str, where: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            raise PluginError(
                f"{where} names the module {module!r}, which is not on the Python path (the current folder "
                f"{os.getcwd()} is looked in first): check the spelling, or unset {ENV}"
            ) from None
        raise PluginError(
            f"{where}: importing {module!r} failed: {type(err).__name__}: {err}"
        ) from err
    except UserError as err:
        raise PluginError(f"{where}: importing {module!r} failed: {err}") from err
    except Exception as err:  # noqa: BLE001 - the user's module: one line, chained
        raise PluginError(
            f"{where}: importing {module!r} failed: {type(err).__name__}: {err}"
        ) from err


def load_plugins(env: str | None = None) -> list[str]:
    """Import the plugin modules (``env``: the value of ``PPL_VAE_PLUGINS``, read from the environment when
    None) and the ``ppl_vae.plugins`` entry points; returns the module names, in import order."""
    text = os.environ.get(ENV, "") if env is None else env
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names:
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    for name in names:
        _import(name, f"{ENV}={text!r}")
    loaded = list(names)
    for ep in entry_points(group=GROUP):
        module, _, attr = (part.strip() for part in ep.value.partition(":"))
        where = f"the entry point {ep.name!r} = {ep.value!r} (group {GROUP!r})"
        _import(module, where)
        if attr:
            _call(module, attr, where)
        loaded.append(module)
    return loaded


def _call(module: str, attr: str, where: str) -> None:
    obj: object = sys.modules[module]
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{attr} is a {type(obj).__name__}, not a function")
        obj()
    except Exception as err:  # noqa: BLE001 - the user's function: one line, chained
        raise PluginError(f"{where}: {module}:{attr} failed: {type(err).__name__}: {err}") from err
