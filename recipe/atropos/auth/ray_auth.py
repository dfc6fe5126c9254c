"""Ray's own token authentication, on for every run that has a token.

Ray (since 2.52) checks a static bearer token on its GCS, raylets, dashboard and jobs endpoint when
`RAY_AUTH_MODE=token`; the token comes from `RAY_AUTH_TOKEN`, else the file `RAY_AUTH_TOKEN_PATH`
names, else `~/.ray/auth_token`. Without it, anyone who reaches a Ray port can run code in the
trainer's workers, which hold the policy and write its checkpoints. A run uses its own token for Ray
too, unless the user names Ray's token explicitly (a cluster started with its own). The variables
must be set before `ray.init` and reach every Ray process: the driver's environment does that for a
local cluster; `ray start` on each node of a multi-node cluster needs the same (docs/security.md).
"""

from __future__ import annotations

import os
import sys

from recipe.atropos.auth.run_token import RunTokenError

RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def _is_token_mode(mode: str | None) -> bool:
    return mode is not None and mode.strip().lower() == "token"


def ray_token_auth_env(token: str, setting: str) -> dict[str, str]:
    """The variables that turn Ray's token authentication on with `token`, given this process's
    environment: an explicit `RAY_AUTH_TOKEN`/`RAY_AUTH_TOKEN_PATH` is kept (only the mode is set), an
    explicit `RAY_AUTH_MODE` other than `token` is refused, naming `setting` (the switch that turns
    the run's token off)."""
    mode = os.environ.get(RAY_AUTH_MODE_ENV)
    if mode is not None and not _is_token_mode(mode):
        raise RunTokenError(f"{RAY_AUTH_MODE_ENV}={mode} turns Ray's token authentication off while this run has a "
                            "token: anyone who reaches a Ray port could run code in the trainer's workers. Unset "
                            f"{RAY_AUTH_MODE_ENV}, or set {setting}=false for a run without authentication")
    variables = {RAY_AUTH_MODE_ENV: "token"}
    if not (os.environ.get(RAY_AUTH_TOKEN_ENV) or os.environ.get(RAY_AUTH_TOKEN_PATH_ENV)):
        variables[RAY_AUTH_TOKEN_ENV] = token
    return variables


def enable_ray_token_auth(token: str, setting: str) -> dict[str, str | None]:
    """Set `ray_token_auth_env` in this process's environment, before it starts or joins Ray; returns
    the values it replaced (for `restore_ray_auth_env`). Ray's C++ side reads the mode when `ray` is
    imported (verl imports it early) and caches the token the first time it needs it: without a
    refresh, a driver would present no token, or another one, to the GCS it starts with this
    environment. So both are refreshed here, as Ray does itself when it turns token authentication on
    for a local cluster."""
    variables = ray_token_auth_env(token, setting)
    replaced = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    _refresh_ray_auth()
    return replaced


def restore_ray_auth_env(replaced: dict[str, str | None]) -> None:
    """Put back what `enable_ray_token_auth` replaced (a process that joined Ray for a while, and goes on:
    the processes it starts afterwards must not inherit the run's Ray token)."""
    for name, value in replaced.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _refresh_ray_auth()


def _refresh_ray_auth() -> None:
    if "ray" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config  # the pinned Ray's (pyproject.toml)

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def check_ray_token_auth(required: bool, setting: str) -> None:
    """Inside a Ray process of the run: stop when the run requires tokens and Ray runs without one
    (started by hand without `RAY_AUTH_MODE=token`), naming `setting`."""
    mode = os.environ.get(RAY_AUTH_MODE_ENV, "")
    if required and not _is_token_mode(mode):
        raise RunTokenError(f"Ray runs without token authentication ({RAY_AUTH_MODE_ENV}={mode or '<unset>'}): start "
                            "the run through `python -m recipe.atropos.main_atropos` or the launcher, which turn it "
                            f"on, or start Ray with {RAY_AUTH_MODE_ENV}=token (docs/security.md); {setting}=false runs "
                            "without any authentication")
