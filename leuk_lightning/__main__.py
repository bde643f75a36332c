"""``python -m leuk_lightning [command] ...``: the ``leuk-lightning`` console script."""

import sys

from leuk_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
