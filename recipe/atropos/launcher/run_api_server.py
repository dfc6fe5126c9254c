"""atroposlib's `run-api` app, unmodified, behind the run's token (auth/asgi_guard.py).

    ATROPOS_RUN_TOKEN=<secret> python -m recipe.atropos.launcher.run_api_server [--host 127.0.0.1] [--port 8000]

Serves the very app object `run-api` serves (`atroposlib.api:app`) under uvicorn in this process,
wrapped so that every request but the `GET /` health probe must carry the run's token (Bearer, or
as the HTTP Basic password: unmodified environments put it in their `--env.rollout_server_url`,
`http://atropos:<token>@host:port`), `/reset_data` is refused (nothing of a training run calls it),
and request bodies are capped. The token comes from ATROPOS_RUN_TOKEN or ATROPOS_RUN_TOKEN_FILE;
without one the server refuses to start unless `--allow-no-token` (loopback only, warned).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from recipe.atropos.auth.asgi_guard import TokenGuard
from recipe.atropos.auth.bind_check import InsecureBindError, check_bind
from recipe.atropos.auth.run_token import TOKEN_ENV, TOKEN_FILE_ENV, RunTokenError, run_token

logger = logging.getLogger("atropos_run_api")

HEALTH_PATH = "/"  # atroposlib's root answers {"message": "AtroposLib API"}
REFUSED_PATHS = ("/reset_data",)
DEFAULT_MAX_BODY_MB = 256.0


def guarded_run_api(token: str | None, max_body_bytes: int) -> TokenGuard:
    from atroposlib.api import app  # the object `run-api` serves

    return TokenGuard(app, token, max_body_bytes=max_body_bytes, open_paths=(HEALTH_PATH,),
                      refused_paths=REFUSED_PATHS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (beyond loopback needs the token)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                        help="largest request body accepted (a /scored_data_list of long groups is a few MB)")
    parser.add_argument("--allow-no-token", action="store_true",
                        help=f"serve without authentication when {TOKEN_ENV} is unset (loopback only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        token = run_token()
        if token is None and not args.allow_no_token:
            raise RunTokenError(f"no run token: set {TOKEN_ENV} (or {TOKEN_FILE_ENV}) to the run's secret, or pass "
                                "--allow-no-token to serve without authentication on loopback")
        check_bind(args.host, token, "--host")
    except (RunTokenError, InsecureBindError) as exc:
        print(f"run_api_server: {exc}", file=sys.stderr)
        return 2
    if token is None:
        logger.warning("--allow-no-token: run-api at %s:%d accepts requests from anyone who can reach it",
                       args.host, args.port)
    app = guarded_run_api(token, int(args.max_body_mb * 1024**2))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
