"""``python -m services.watcher`` is ``wva watcher``."""

from __future__ import annotations

import sys

from services import cli

if __name__ == "__main__":
    sys.exit(cli.main(["watcher", *sys.argv[1:]]))
