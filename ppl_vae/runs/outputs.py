"""Moved to :mod:`ppl_vae.store.outputs` (persistence lives below training); this name stays for old imports."""

from ..store.outputs import *  # noqa: F403
