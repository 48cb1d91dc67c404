"""`python -m services.sandbox …` is `wva sandbox …`."""

import sys

from services.sandbox.command import main

sys.exit(main())
