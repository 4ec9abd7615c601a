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
``available_*()`` and the README tables are generated from :meth:`Registry.rows`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from .errors import UserError

__all__ = [
    "KINDS",
    "REGISTRY",
    "Entry",
    "Kind",
    "Param",
    "Registry",
    "Spec",
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
    """

    name: str
    default: Any = None
    type: type | None = None
    doc: str = ""
    choices: tuple[Any, ...] | None = None

    @property
    def kind(self) -> type:
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
    ``traits`` holds the declarations other modules read instead of testing names, e.g.
    ``fast_paths`` (a frozenset of path names), ``closed_form_kl`` (bool), ``memory`` (a callable
    estimating bytes), ``reports`` (which summary columns apply).
    """

    kind: Kind
    name: str
    factory: Callable[..., Any]
    params: Mapping[str, Param]
    doc: str
    traits: Mapping[str, Any] = field(default_factory=dict)

    def trait(self, key: str, default: Any = None) -> Any:
        """A declared trait, or ``default`` when the entry does not declare it."""
        return self.traits.get(key, default)

    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    def describe(self) -> str:
        """One line: the description and the parameters with their defaults."""
        if not self.params:
            return self.doc
        shown = ", ".join(f"{k}={format_value(p.default)}" for k, p in self.params.items())
        return f"{self.doc} (parameters: {shown})"


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
        params = self.entry.params
        shown = [
            f"{k}={format_value(self.given[k])}"
            for k in params
            if k in self.given and self.given[k] != params[k].default
        ]
        return self.name + (":" + ",".join(shown) if shown else "")

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

    def __init__(self) -> None:
        self._entries: dict[Kind, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def register(
        self,
        kind: Kind,
        name: str,
        factory: Callable[..., Any],
        *,
        params: tuple[Param, ...] | Mapping[str, Any] = (),
        doc: str,
        replace: bool = False,
        **traits: Any,
    ) -> Entry:
        """Add an entry (``params`` as :class:`Param` s, or a ``{name: default}`` mapping).

        Registering a name twice is an error unless ``replace=True`` (a user re-running a notebook cell
        that registers their own likelihood passes it).
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
        )
        self._entries[kind][name] = entry
        return entry

    def unregister(self, kind: Kind, name: str) -> None:
        """Remove an entry (tests, and users replacing their own)."""
        self._entries[kind].pop(name, None)

    def __contains__(self, key: tuple[Kind, str]) -> bool:
        kind, name = key
        return name in self._entries.get(kind, {})

    def entries(self, kind: Kind) -> Iterator[Entry]:
        """The entries of a kind, in registration order."""
        return iter(tuple(self._entries[kind].values()))

    def names(self, kind: Kind) -> tuple[str, ...]:
        return tuple(self._entries[kind])

    def entry(self, kind: Kind, name: str) -> Entry:
        """The entry named ``name``; an unknown name is a UserError listing the valid ones."""
        try:
            return self._entries[kind][name]
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
            param = self._param(entry, key, text)
            if key in given:
                raise UserError(f"{kind} {text!r}: parameter {key!r} is given more than once")
            try:
                given[key] = param.parse(raw)
            except (TypeError, ValueError) as err:
                raise UserError(
                    f"{kind} {text!r}: parameter {key!r} must be {param.type_name}; got {raw!r} ({err})"
                ) from None
        for key, value in overrides.items():
            self._param(entry, key, text)
            given[key] = value
        return Spec(kind, name, MappingProxyType(given), entry)

    @staticmethod
    def _param(entry: Entry, key: str, text: str) -> Param:
        if key not in entry.params:
            valid = ", ".join(entry.params) or "none"
            raise UserError(
                f"{entry.kind} {entry.name!r} has no parameter {key!r} (in {text!r}); valid parameters: {valid}"
            )
        return entry.params[key]

    def build(self, kind: Kind, spec: str | Spec, **context: Any) -> Any:
        """Parse ``spec`` and call its factory with the caller's ``context`` (e.g. ``input_dim=``)."""
        return self.parse(kind, spec).build(**context)

    def describe(self, kind: Kind) -> dict[str, str]:
        """``{name: one-line description with parameters}`` (what ``available_*()`` return)."""
        return {e.name: e.describe() for e in self.entries(kind)}

    def rows(self, kind: Kind) -> list[dict[str, str]]:
        """One row per entry for generated tables (README, docs, ``--help``): name, parameters, doc."""
        return [
            {
                "name": e.name,
                "parameters": ", ".join(
                    f"{k}={format_value(p.default)}" for k, p in e.params.items()
                ),
                "description": e.doc,
            }
            for e in self.entries(kind)
        ]

    def help_text(self, kind: Kind) -> str:
        """A compact ``--help`` line: ``name (k=5, grad=reparam), ...``."""
        parts = []
        for e in self.entries(kind):
            args = ", ".join(f"{k}={format_value(p.default)}" for k, p in e.params.items())
            parts.append(f"{e.name} ({args})" if args else e.name)
        return ", ".join(parts)


#: The one registry of ppl_vae (objectives, guides, likelihoods, priors, models, datasets).
REGISTRY = Registry()
register = REGISTRY.register
