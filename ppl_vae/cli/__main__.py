"""``python -m ppl_vae.cli``: the same as the ``ppl-vae`` command."""

import sys

from . import main

sys.exit(main())
