"""A Ray client for the tests that check Ray's token authentication: a driver process that tries to join
a cluster and run one task, and what came of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psutil

from recipe.atropos.auth.ray_auth import RAY_AUTH_MODE_ENV
from recipe.atropos.auth.run_token import TOKEN_ENV, TOKEN_FILE_ENV

JOIN_AND_RUN = ("import sys, ray\n"
                "ray.init(address=sys.argv[1], log_to_driver=False)\n"
                "print('JOINED', ray.get(ray.remote(lambda: 6 * 7).remote()), flush=True)\n")
# What Ray's GCS client logs (and retries) when the GCS refuses its token.
REFUSED_MARK = "Authentication token is missing or incorrect"


def env_without_tokens(**ray_auth: str) -> dict[str, str]:
    """This process's environment without the run's token or any Ray token setting, plus `ray_auth`:
    what a client on the same host that does not know the secret has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k not in (TOKEN_ENV, TOKEN_FILE_ENV)}
    return {**env, RAY_AUTH_MODE_ENV: "disabled", **ray_auth}


def try_to_join(address: str, env: dict[str, str], timeout: float = 90.0) -> str:
    """'joined' once the driver ran a task on the cluster at `address`, 'refused' as soon as Ray reports
    its token refused, else 'failed: <last lines>' (it exited, or `timeout` passed). The driver runs
    in its own session and is killed by its process group afterwards."""
    driver = subprocess.Popen([sys.executable, "-c", JOIN_AND_RUN, address], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    timer = threading.Timer(timeout, driver.kill)
    timer.start()
    tail: list[str] = []
    try:
        for line in driver.stdout:
            if line.startswith("JOINED 42"):
                return "joined"
            if REFUSED_MARK in line:
                return "refused"
            tail = [*tail, line][-5:]
        return f"failed (exit {driver.wait()}): " + "".join(tail)
    finally:
        timer.cancel()
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        driver.stdout.close()


def gcs_address_of(process: psutil.Process) -> str | None:
    """`127.0.0.1:<port>` of the Ray GCS among `process`'s descendants (a driver's local cluster), once
    it listens; None before. A local cluster's GCS picks its port itself (--gcs_server_port=0)."""
    for child in process.children(recursive=True):
        try:
            if child.name() == "gcs_server":
                ports = sorted(conn.laddr.port for conn in child.net_connections(kind="inet")
                               if conn.status == psutil.CONN_LISTEN)
                return f"127.0.0.1:{ports[0]}" if ports else None
        except psutil.Error:
            continue
    return None
