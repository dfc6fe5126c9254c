"""The run's token for an unmodified atroposlib environment, without it on the command line.

The launcher hands environments the token in ATROPOS_RUN_TOKEN; `run_env` puts it where
atroposlib's clients take credentials from, in this process's arguments only (`/proc/<pid>/cmdline`
keeps the original ones):
- `--env.rollout_server_url http://atropos:<token>@host:port`: every request atroposlib makes to
  `run-api` is built from that string, and aiohttp turns URL credentials into a Basic header;
- `--openai.api_key <token>` when `--openai.base_url` points the environment at a policy server:
  the `vllm` server type sends it as a Bearer header on `/health` and `/generate`, the `openai`
  type on `/v1/*`.
atroposlib prints its configuration at start-up (`rprint`): the token is masked there.
"""

from __future__ import annotations

from collections.abc import Sequence

from recipe.atropos.auth.run_token import redact, url_with_credentials

_URL_FLAG = "--env.rollout_server_url"
_BASE_URL_FLAG = "--openai.base_url"
_KEY_FLAG = "--openai.api_key"


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(f"{flag}=") for arg in args)


def with_run_token(args: Sequence[str], token: str) -> list[str]:
    """`args` of an environment's command with the token added as described in the module docstring."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == _URL_FLAG and i + 1 < len(out):
            out[i + 1] = url_with_credentials(out[i + 1], token)
        elif arg.startswith(f"{_URL_FLAG}="):
            out[i] = f"{_URL_FLAG}={url_with_credentials(arg.partition('=')[2], token)}"
    if _has_flag(out, _BASE_URL_FLAG) and not _has_flag(out, _KEY_FLAG):
        out += [_KEY_FLAG, token]
    return out


def mask_printed_configs(token: str) -> None:
    """atroposlib's start-up print of its configs (`rich.print` in atroposlib.envs.base) with the token masked."""
    import atroposlib.envs.base as base
    from rich.pretty import pretty_repr

    printer = base.rprint
    if getattr(printer, "masks_run_token", False):
        return

    def masked(*objects: object, **kwargs: object) -> None:
        printer(*(redact(o if isinstance(o, str) else pretty_repr(o), token) for o in objects), **kwargs)

    masked.masks_run_token = True
    base.rprint = masked
