"""Moved to :mod:`ppl_vae.store.commit` (persistence lives below training); this name stays for old imports."""

from ..store.commit import *  # noqa: F403
