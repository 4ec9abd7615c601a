"""Moved to :mod:`ppl_vae.store.checkpoint` (persistence lives below training); this name stays for old imports."""

from ..store.checkpoint import *  # noqa: F403
