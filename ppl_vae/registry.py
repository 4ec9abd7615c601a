r"""One registry and one parser for every named building block: ``name`` or ``name:key=value,...``.

Objectives, guide families, likelihoods, priors, models and datasets are all named the same way, in Python
and on the command line (``iwae:k=5``, ``iaf:n=2``, ``gaussian:scale=0.1``, ``vae:latent=8``). Each kind's
entries live in one :class:`Registry`; each :class:`Entry` declares what the rest of the code used to
guess from a name: its parameters with types and defaults (:class:`Param`), its one-line description,
and its *traits* (which fast paths it supports, whether a closed-form KL exists, a memory estimate, how
it reports itself), read by the code that needs them with :meth:`Entry.trait`.

The grammar (one parser, :func:`parse_spec`)::

    spec   := name [":" item ("," item)*]
    item   := key "=" value
    name, key := [A-Za-z_][A-Za-z0-9_]*        value := any text without "," (lists: "200-200")

Values are converted by the parameter's ``parse`` (default: from the type of its default; ``bool``
accepts ``1/0/true/false/yes/no``). An unknown name or parameter, a parameter given twice or a value that
does not convert is a :class:`~ppl_vae.errors.UserError` naming the kind, the spec and the valid choices.
:meth:`Spec.__str__` is canonical: parameters at their defaults are left out, so two spellings of the same
entry print the same (``"iwae:k=5"`` and ``"iwae"`` are one spec when 5 is the default).

Adding a building block is one module that calls :func:`register` (and its test); ``--help`` texts,
``available_*()`` and the user guide's tables are generated from :meth:`Registry.rows`.
"""

from __future__ import annotations

import builtins
import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from .errors import UserError

__all__ = [
    "KINDS",
    "REGISTRY",
    "Entry",
    "Kind",
    "KindView",
    "Param",
    "Registry",
    "Spec",
    "format_spec",
    "format_value",
    "parse_spec",
    "register",
]

Kind = Literal["objective", "guide", "likelihood", "prior", "model", "dataset"]
KINDS: tuple[Kind, ...] = get_args(Kind)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_ints(text: str) -> tuple[int, ...]:
    """``"200-200"`` (or ``"200x200"``) -> ``(200, 200)``."""
    return tuple(int(t) for t in text.replace("x", "-").split("-") if t)


@dataclass(frozen=True)
class Param:
    """One parameter of an entry.

    Parameters
    ----------
    name
        The key written in a spec (``k`` in ``iwae:k=5``).
    default
        Its value when the spec does not give it; ``None`` means "chosen by the entry" (then ``type`` or
        ``parse`` says how to read a given value).
    type
        ``int``, ``float``, ``str``, ``bool`` or ``tuple`` (of ints, written ``200-200``); default: the
        type of ``default``.
    doc
        One line for ``--help`` and the docs.
    choices
        The allowed values, when the parameter is an enumeration (``grad`` in ``{reparam, stl, dreg}``).
    shown
        Written in the canonical spec even at its default (``iaf:n=2``: the number of flow steps says
        what the family is).
    """

    name: str
    default: Any = None
    type: builtins.type | None = None
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    shown: bool = False

    @property
    def kind(self) -> builtins.type:
        if self.type is not None:
            return self.type
        return str if self.default is None else type(self.default)

    def parse(self, text: str) -> Any:
        """Convert the text of a spec into this parameter's type (``ValueError`` if it does not fit)."""
        kind = self.kind
        if kind is bool:
            value: Any = _parse_bool(text)
        elif kind is tuple:
            value = _parse_ints(text)
        elif kind is int:
            value = int(text)
        elif kind is float:
            value = float(text)
        else:
            value = kind(text)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"choose one of {', '.join(map(str, self.choices))}")
        return value

    @property
    def type_name(self) -> str:
        return "ints (e.g. 200-200)" if self.kind is tuple else self.kind.__name__


@dataclass(frozen=True)
class Entry:
    """A registered building block: how to build it, what it takes, and what it declares about itself.

    ``factory(**params, **context)`` builds it (context: what the caller supplies, e.g. ``input_dim``).
    ``check(values, text)``, when given, refuses values that convert but do not fit (``k=0``) with a
    :class:`~ppl_vae.errors.UserError`. ``traits`` holds the declarations other modules read instead of
    testing names; each kind's module documents its own (objectives: ``fast_paths``, ``reparam_only``,
    ``local_only``, ``sums_enumerated``; guides: ``closed_form_kl``, ``encoder_outputs``; likelihoods:
    ``support``, ``reconstruction``; priors: ``closed_form_kl``; models: ``cls``, ``guide_families``;
    datasets: ``images``, ``idx``).
    """

    kind: Kind
    name: str
    factory: Callable[..., Any]
    params: Mapping[str, Param]
    doc: str
    traits: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any], str], None] | None = None

    def trait(self, key: str, default: Any = None) -> Any:
        """A declared trait, or ``default`` when the entry does not declare it."""
        return self.traits.get(key, default)

    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    def describe(self) -> str:
        """One line: the description and the parameters with their defaults."""
        if not self.params:
            return self.doc
        return f"{self.doc} (parameters: {_param_list(self)})"


@dataclass(frozen=True)
class Spec:
    """A parsed spec: the entry's kind and name and the parameters **given** (converted).

    ``str(spec)`` is canonical (given parameters that equal the default are left out, the rest in the
    entry's declared order); :attr:`values` merges the defaults in.
    """

    kind: Kind
    name: str
    given: Mapping[str, Any]
    entry: Entry = field(repr=False, compare=False)

    @property
    def values(self) -> dict[str, Any]:
        """Every parameter: the given ones over the entry's defaults."""
        return {**self.entry.defaults(), **self.given}

    def __str__(self) -> str:
        return format_spec(self.entry, self.given)

    def build(self, **context: Any) -> Any:
        """``entry.factory(**values, **context)``."""
        return self.entry.factory(**self.values, **context)


def format_value(value: Any) -> str:
    """How a value is written in a spec: ``5``, ``0.1``, ``200-200``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return str(value)


def format_spec(entry: Entry, values: Mapping[str, Any]) -> str:
    """The canonical spec of ``entry`` with ``values``: declared parameters in their order, those at their
    default left out (unless :attr:`Param.shown`), then any undeclared ones as given."""
    params = entry.params
    shown = [
        f"{k}={format_value(values[k])}"
        for k, p in params.items()
        if k in values and (p.shown or values[k] != p.default)
    ]
    shown += [f"{k}={format_value(v)}" for k, v in values.items() if k not in params]
    return entry.name + (":" + ",".join(shown) if shown else "")


def parse_spec(text: str, what: str = "spec") -> tuple[str, list[tuple[str, str]]]:
    """Split ``"name:key=value,..."`` into the name and the ``(key, value)`` pairs, as written.

    The syntax only; :meth:`Registry.parse` checks the name and converts the values.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError(
            f"{what} must be a non-empty string such as 'name' or 'name:key=value'; got {text!r}"
        )
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise UserError(f"{what} {text!r}: {name!r} is not a name (letters, digits and '_')")
    items: list[tuple[str, str]] = []
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"{what} {text!r}: parameters are written key=value; got {item!r}")
        items.append((key.strip(), value.strip()))
    return name, items


class Registry:
    """Entries of every :data:`Kind`, registered by name; one parser for their specs."""

    def __init__(self, providers: Mapping[Kind, str] | None = None) -> None:
        self._entries: dict[Kind, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._columns: dict[Kind, dict[str, Callable[[Entry], str]]] = {}
        self._providers = dict(providers or {})

    def _kind(self, kind: Kind) -> dict[str, Entry]:
        """The entries of ``kind``, importing the module that registers the built-in ones first."""
        module = self._providers.pop(kind, None)
        if module is not None:
            importlib.import_module(module)
        return self._entries[kind]

    def register(
        self,
        kind: Kind,
        name: str,
        factory: Callable[..., Any],
        *,
        params: tuple[Param, ...] | Mapping[str, Any] = (),
        doc: str,
        replace: bool = False,
        check: Callable[[dict[str, Any], str], None] | None = None,
        **traits: Any,
    ) -> Entry:
        """Add an entry (``params`` as :class:`Param` s, or a ``{name: default}`` mapping).

        Registering a name twice is an error unless ``replace=True`` (a user re-running a notebook cell
        that registers their own likelihood passes it). ``check(values, text)`` refuses values that do
        not fit (see :class:`Entry`); ``traits`` are the entry's declarations.
        """
        if kind not in self._entries:
            raise UserError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        if not _NAME.match(name):
            raise UserError(
                f"{kind} name {name!r} must be letters, digits and '_' (it is written in specs)"
            )
        if not callable(factory):
            raise UserError(
                f"{kind} {name!r}: factory must be callable; got {type(factory).__name__}"
            )
        if name in self._entries[kind] and not replace:
            raise UserError(
                f"{kind} {name!r} is registered already; pass replace=True to replace it"
            )
        if isinstance(params, Mapping):
            params = tuple(Param(k, v) for k, v in params.items())
        entry = Entry(
            kind,
            name,
            factory,
            MappingProxyType({p.name: p for p in params}),
            doc,
            MappingProxyType(dict(traits)),
            check,
        )
        self._entries[kind][name] = entry
        return entry

    def unregister(self, kind: Kind, name: str) -> None:
        """Remove an entry (tests, and users replacing their own)."""
        self._entries[kind].pop(name, None)

    def __contains__(self, key: tuple[Kind, str]) -> bool:
        kind, name = key
        return kind in self._entries and name in self._kind(kind)

    def get(self, kind: Kind, name: str) -> Entry | None:
        """The entry named ``name``, or None."""
        return self._kind(kind).get(name)

    def view(self, kind: Kind, value: Callable[[Entry], Any] | None = None) -> Mapping[str, Any]:
        """A live, read-only mapping ``{name: value(entry)}`` (default: the entry) of one kind."""
        return KindView(self, kind, value or (lambda e: e))

    def entries(self, kind: Kind) -> Iterator[Entry]:
        """The entries of a kind, in registration order."""
        return iter(tuple(self._kind(kind).values()))

    def names(self, kind: Kind) -> tuple[str, ...]:
        return tuple(self._kind(kind))

    def entry(self, kind: Kind, name: str) -> Entry:
        """The entry named ``name``; an unknown name is a UserError listing the valid ones."""
        try:
            return self._kind(kind)[name]
        except KeyError:
            valid = "; ".join(f"{e.name} - {e.describe()}" for e in self._entries[kind].values())
            raise UserError(f"unknown {kind} {name!r}; choose one of: {valid}") from None

    def parse(self, kind: Kind, spec: str | Spec, **overrides: Any) -> Spec:
        """Parse ``"name:key=value,..."`` (or pass a :class:`Spec` through) and convert its values.

        ``overrides`` are values given in Python (already typed) on top of the string's.
        """
        if isinstance(spec, Spec):
            if spec.kind != kind:
                raise UserError(f"expected a {kind} spec; got the {spec.kind} spec {str(spec)!r}")
            if not overrides:
                return spec
            text = str(spec)
        else:
            text = spec
        name, items = parse_spec(text, kind)
        entry = self.entry(kind, name)
        given: dict[str, Any] = {}
        for key, raw in items:
            param = self._param_of(entry, key, text)
            if key in given:
                raise UserError(f"{kind} {text!r}: parameter {key!r} is given more than once")
            try:
                given[key] = param.parse(raw)
            except (TypeError, ValueError) as err:
                raise UserError(
                    f"{kind} {text!r}: parameter {key!r} must be of type {param.type_name}; got "
                    f"{raw!r} ({err})"
                ) from None
        for key, value in overrides.items():
            self._param_of(entry, key, text)
            given[key] = value
        spec = Spec(kind, name, MappingProxyType(given), entry)
        if entry.check is not None:
            entry.check(spec.values, text)
        return spec

    @staticmethod
    def _param_of(entry: Entry, key: str, text: str) -> Param:
        if key not in entry.params:
            valid = ", ".join(entry.params) or "none"
            raise UserError(
                f"{entry.kind} {text!r}: {entry.name!r} has no parameter {key!r}; valid parameters: "
                f"{valid}"
            )
        return entry.params[key]

    def build(self, kind: Kind, spec: str | Spec, **context: Any) -> Any:
        """Parse ``spec`` and call its factory with the caller's ``context`` (e.g. ``input_dim=``)."""
        return self.parse(kind, spec).build(**context)

    def describe(self, kind: Kind) -> dict[str, str]:
        """``{name: one-line description with parameters}`` (what ``available_*()`` return)."""
        return {e.name: e.describe() for e in self.entries(kind)}

    def add_column(self, kind: Kind, header: str, render: Callable[[Entry], str]) -> None:
        """A column of the generated tables of ``kind`` (README, docs): ``render(entry)`` is its cell,
        read from the entry's traits (declared by the kind's own module, next to the traits it reads)."""
        self._columns.setdefault(kind, {})[header] = render

    def rows(self, kind: Kind) -> list[dict[str, str]]:
        """One row per entry for generated tables (README, docs, ``--help``): name, parameters, doc, and
        the kind's declared columns (:meth:`add_column`)."""
        columns = self._columns.get(kind, {})
        return [
            {
                "name": e.name,
                "parameters": _param_list(e),
                "description": e.doc,
                **{header: render(e) for header, render in columns.items()},
            }
            for e in self.entries(kind)
        ]

    def markdown(self, kind: Kind) -> str:
        """The table of ``kind`` in Markdown (the user guide's tables are this text, checked by a test)."""
        rows = self.rows(kind)
        headers = list(rows[0]) if rows else ["name", "parameters", "description"]

        def cell(key: str, text: str) -> str:
            text = text.replace("|", "\\|")
            return f"`{text}`" if key in ("name", "parameters") and text else text

        lines = [
            "| " + " | ".join(cell("", h) for h in headers) + " |",
            "|" + "---|" * len(headers),
        ]
        lines += ["| " + " | ".join(cell(h, row[h]) for h in headers) + " |" for row in rows]
        return "\n".join(lines)

    def help_text(self, kind: Kind, names: Sequence[str] | None = None, docs: bool = False) -> str:
        """A compact ``--help`` text: ``name (k=5, grad=reparam), ...``; with ``docs``, each entry's
        description first (``hvae (two stochastic layers ...; latent=100-50, ...)``). ``names``: only
        these entries, in this order."""
        entries = (
            list(self.entries(kind)) if names is None else [self.entry(kind, n) for n in names]
        )
        parts = []
        for e in entries:
            args = _param_list(e)
            inner = "; ".join(t for t in ((e.doc if docs else ""), args) if t)
            parts.append(f"{e.name} ({inner})" if inner else e.name)
        return ", ".join(parts)


def _param_list(entry: Entry) -> str:
    """``k=5, grad=reparam, hidden`` (a parameter whose default the entry chooses shows its name only)."""
    return ", ".join(
        k if p.default is None else f"{k}={format_value(p.default)}"
        for k, p in entry.params.items()
    )


class KindView(Mapping[str, Any]):
    """A live, read-only ``{name: value(entry)}`` view of one kind (``DATASETS``, ``GUIDES``, ...)."""

    def __init__(self, registry: Registry, kind: Kind, value: Callable[[Entry], Any]) -> None:
        self._registry, self._kind, self._value = registry, kind, value

    def __getitem__(self, name: str) -> Any:
        entry = self._registry.get(self._kind, name)
        if entry is None:
            raise KeyError(name)
        return self._value(entry)

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.names(self._kind))

    def __len__(self) -> int:
        return len(self._registry.names(self._kind))

    def __repr__(self) -> str:
        return f"<{self._kind} registry: {', '.join(self)}>"


#: The one registry of ppl_vae (objectives, guides, likelihoods, priors, models, datasets); each kind's
#: built-in entries are registered by its module, imported on the kind's first use.
REGISTRY = Registry(
    {
        "objective": "ppl_vae.objectives",
        "guide": "ppl_vae.guides",
        "likelihood": "ppl_vae.likelihoods",
        "prior": "ppl_vae.priors",
        "model": "ppl_vae.models.names",
        "dataset": "ppl_vae.data",
    }
)
register = REGISTRY.register
