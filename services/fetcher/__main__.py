"""``python -m services.fetcher`` is ``wva fetcher``."""

import sys

from services.cli import main

sys.exit(main(["fetcher", *sys.argv[1:]]))
