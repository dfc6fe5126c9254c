"""Run an Atropos environment with the atroposlib 0.4.0 fixes (recipe.atropos.envs.atropos_compat).

    python -m recipe.atropos.envs.run_env <module | path/to/env.py> serve [the environment's flags]

Applies the fixes, then runs the module or file as `__main__` (as `python -m module` or
`python path` would), so the environment's own `if __name__ == "__main__": MyEnv.cli()` starts
it unmodified. The launcher starts every environment this way. With the run's token in
ATROPOS_RUN_TOKEN (or ATROPOS_RUN_TOKEN_FILE), the environment sends it to run-api and to the policy
server (atropos_compat/run_credentials.py).
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from recipe.atropos.auth.run_token import run_token
from recipe.atropos.envs import atropos_compat
from recipe.atropos.envs.atropos_compat.run_credentials import mask_printed_configs, with_run_token


def is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        sys.exit("usage: python -m recipe.atropos.envs.run_env <module | path/to/env.py> serve [flags]")
    target, rest = args[0], args[1:]
    atropos_compat.apply()
    token = run_token()
    if token:
        mask_printed_configs(token)
        rest = with_run_token(rest, token)
    sys.argv = [target, *rest]
    if is_path(target):
        path = Path(target).resolve()
        if not path.is_file():
            sys.exit(f"recipe.atropos.envs.run_env: no environment file at {path}")
        sys.path.insert(0, str(path.parent))  # what `python path` puts first
        runpy.run_path(str(path), run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
