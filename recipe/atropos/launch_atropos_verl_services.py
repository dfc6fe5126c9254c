"""The launcher where the README and users call it: `python recipe/atropos/launch_atropos_verl_services.py
--config <launcher.yaml> ...` is `python -m recipe.atropos.launcher ...` (recipe/atropos/launcher/services.py)."""

import sys

from recipe.atropos.launcher.services import main

if __name__ == "__main__":
    sys.exit(main())
