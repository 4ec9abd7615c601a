"""Moved to :mod:`ppl_vae.store.lock` (persistence lives below training); this name stays for old imports."""

from ..store.lock import *  # noqa: F403
