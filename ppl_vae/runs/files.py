"""Moved to :mod:`ppl_vae.store.files` (persistence lives below training); this name stays for old imports."""

from ..store.files import *  # noqa: F403
