"""``python -m bearerguard``: the same as the ``bearerguard`` command."""

import sys

from bearerguard._cli import main

sys.exit(main())
