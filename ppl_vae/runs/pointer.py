"""Moved to :mod:`ppl_vae.store.pointer` (persistence lives below training); this name stays for old imports."""

from ..store.pointer import *  # noqa: F403
