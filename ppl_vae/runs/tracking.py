"""Moved to :mod:`ppl_vae.store.tracking` (persistence lives below training); this name stays for old imports."""

from ..store.tracking import *  # noqa: F403
