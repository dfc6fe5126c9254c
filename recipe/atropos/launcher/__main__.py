"""`python -m recipe.atropos.launcher --config <launcher.yaml> [--set KEY=VALUE ...] [trainer overrides ...]`."""

import sys

from recipe.atropos.launcher.services import main

sys.exit(main())
