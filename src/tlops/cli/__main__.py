"""``python -m tlops.cli``: the same as the ``tlops`` command."""

import sys

from tlops.cli import main

sys.exit(main())
