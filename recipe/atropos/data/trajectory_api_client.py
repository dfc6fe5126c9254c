"""The trainer's client of the Atropos trajectory API (atroposlib `run-api`).

Endpoints used: `GET /`, `POST /register`, `GET /info`, `GET /status`, `GET /batch`. Nothing else
exists on the server for a trainer (atroposlib 0.4.0, `atroposlib/api/server.py`).

`/batch` pops data on the server, so a `/batch` request that reached the server is never abandoned:
it is retried only when it could not be sent (connection refused, connect timeout), and its answer
is waited for up to `batch_read_timeout`, whatever is left of the poll's budget. One that failed after
it was sent is counted (`stats.batch_requests_failed_after_send`) and logged at ERROR. Every batch
this client returns is the caller's to keep: each group is validated here, once; invalid groups are
dropped with a reason naming the group and the field, counted in `stats`, and the rest is kept.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson
import requests
import urllib3.exceptions
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from recipe.atropos.auth.run_token import auth_headers, required_run_token
from recipe.atropos.data.batch_payload import decode_batch
from recipe.atropos.data.client_config import AtroposClientConfig
from recipe.atropos.data.errors import (
    AtroposBatchRequestFailedError,
    AtroposProtocolError,
    AtroposRegistrationError,
    AtroposUnavailableError,
    InvalidGroupError,
)
from recipe.atropos.data.scored_group import AtroposBatch, ScoredGroup, TrajectoryBatch, validate_group
from recipe.atropos.net.direct_http import direct_session

__all__ = ["AtroposEnvironmentClient", "ClientStats"]

logger = logging.getLogger(__name__)

API_ROOT_MESSAGE = "AtroposLib API"


class _RetryableHTTPError(Exception):
    """A 5xx answer: the server may answer properly on the next try."""

    def __init__(self, response: requests.Response) -> None:
        self.status_code = response.status_code
        super().__init__(f"HTTP {response.status_code} from {response.request.method} {response.url}: {response.text[:200]}")


def _without_ref_logprobs(group: ScoredGroup) -> tuple[str, str] | None:
    if group.ref_logprobs is not None:
        return None
    return "ref_logprobs", ("is missing: trainer.atropos.env_ref_logprobs_only=true loads no reference model, so "
                            "every group must send ref_logprobs")


class _NotSentError(Exception):
    """The request never reached the server (refused, or no connection in time): safe to send again."""


def _never_reached_server(exc: requests.RequestException) -> bool:
    """True for a failure before any byte of the request was sent: a connect timeout, or a connection
    that could not be made (requests wraps urllib3's NewConnectionError in MaxRetryError). A reset or
    a read timeout after the request went out is not: the server may have acted on it."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", None)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


@dataclasses.dataclass
class ClientStats:
    """Counters since the client was made; the trainer turns them into metrics."""

    batches: int = 0
    groups_received: int = 0
    invalid_groups: int = 0
    invalid_reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    retries: int = 0
    server_errors: int = 0
    # `/batch` requests that failed after reaching the server: the batch they popped may be lost.
    batch_requests_failed_after_send: int = 0


class AtroposEnvironmentClient:
    """The trainer's client of the Atropos trajectory API (`run-api`): bounded retries, and every
    group it receives validated (the name users asked for: it talks to the API, not to environments).

    Args:
        config: `AtroposClientConfig`, or a mapping of overrides of config/atropos_client.yaml.
        vocab_size: when given, token ids outside [0, vocab_size) make a group invalid.
        max_token_len: when given, sequences longer than this make a group invalid.
        max_prompt_len: when given, a sequence whose prompt (tokens before the first completion token)
            is longer than this makes its group invalid (`prompt_too_long`).
        max_response_len: when given, a sequence whose response (its first completion token to its end)
            is longer than this makes its group invalid (`response_too_long`).
        session: a `requests.Session` to reuse (one is made otherwise).

    The run's token (auth/run_token.py) is sent with every request; without one the client refuses
    to start unless `require_token` is false.
    """

    def __init__(
        self,
        config: AtroposClientConfig | Mapping[str, Any] | None = None,
        *,
        vocab_size: int | None = None,
        max_token_len: int | None = None,
        max_prompt_len: int | None = None,
        max_response_len: int | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config if isinstance(config, AtroposClientConfig) else AtroposClientConfig.from_mapping(config)
        self.base_url = self.config.api_url.rstrip("/")
        self.vocab_size = vocab_size
        self.max_token_len = max_token_len
        self.max_prompt_len = max_prompt_len
        self.max_response_len = max_response_len
        self.session = session or direct_session()
        # The run's token goes in a header on every request (never in the URL: URLs reach logs and errors).
        self.session.headers.update(auth_headers(required_run_token(self.config.require_token,
                                                                    "trainer.atropos.require_token")))
        self.stats = ClientStats()

    # ------------------------------------------------------------------ HTTP
    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        budget_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One API call with retries on connection errors, timeouts and 5xx (never on 4xx).

        `budget_s` bounds the whole call (attempts and backoff); it defaults to max_wait_time.
        """
        budget = self.config.max_wait_time if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        url = f"{self.base_url}{path}"

        def attempt() -> requests.Response:
            remaining = deadline - time.monotonic()
            timeout = max(0.05, min(self.config.timeout, remaining))
            response = self.session.request(method, url, json=json_body, timeout=timeout, headers=headers)
            if response.status_code >= 500:
                self.stats.server_errors += 1
                raise _RetryableHTTPError(response)
            if response.status_code >= 400:
                raise AtroposProtocolError(
                    f"{method} {path} answered HTTP {response.status_code}: {response.text[:500]}"
                )
            return response

        retrying = self._retrying((requests.ConnectionError, requests.Timeout, _RetryableHTTPError), budget,
                                  f"{method} {path} failed")
        try:
            return retrying(attempt)
        except (requests.ConnectionError, requests.Timeout, _RetryableHTTPError) as exc:
            raise AtroposUnavailableError(
                f"Atropos API at {self.base_url} unavailable for {method} {path} after retries "
                f"(budget {budget:.1f}s, {self.config.retry_attempts} attempts): {exc}. "
                "Is `run-api` running there? Check trainer.atropos.api_url."
            ) from exc

    def _retrying(self, retry_on: type[BaseException] | tuple[type[BaseException], ...], budget: float,
                  what: str) -> Retrying:
        """tenacity's retry loop with this client's settings: exponential backoff with jitter, at most
        retry_attempts attempts within `budget` seconds; each retry counted and logged."""

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            logger.warning("Atropos %s (attempt %d/%d): %s; retrying in %.2fs", what, state.attempt_number,
                           self.config.retry_attempts, state.outcome.exception() if state.outcome else "?",
                           state.upcoming_sleep)

        return Retrying(
            retry=retry_if_exception_type(retry_on),
            stop=stop_after_attempt(self.config.retry_attempts) | stop_before_delay(budget),
            wait=wait_exponential_jitter(multiplier=self.config.retry_delay, max=max(self.config.retry_delay, 10.0),
                                         jitter=self.config.retry_delay),
            before_sleep=before_sleep,
            reraise=True,
        )

    def _json(self, response: requests.Response) -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise AtroposProtocolError(
                f"{response.request.method} {response.url} answered non-JSON: {response.content[:200]!r}"
            ) from exc

    # ------------------------------------------------------------------ API
    def health(self) -> bool:
        """True when `GET /` answers the Atropos banner and `GET /status` answers; one try, no retries."""
        try:
            root = self._json(self.session.get(f"{self.base_url}/", timeout=self.config.timeout))
            if not isinstance(root, dict) or root.get("message") != API_ROOT_MESSAGE:
                logger.warning("%s/ does not look like the Atropos API: %r", self.base_url, root)
                return False
            status = self.session.get(f"{self.base_url}/status", timeout=self.config.timeout)
            return status.status_code == 200
        except (requests.RequestException, AtroposProtocolError) as exc:
            logger.info("Atropos API at %s is not healthy: %s", self.base_url, exc)
            return False

    def status(self) -> dict[str, int]:
        """`GET /status`: {"current_step", "queue_size"}."""
        payload = self._json(self._request("GET", "/status"))
        if not isinstance(payload, dict) or "current_step" not in payload or "queue_size" not in payload:
            raise AtroposProtocolError(f"/status answered an unexpected shape: {payload!r}")
        return payload

    def info(self) -> dict[str, int]:
        """`GET /info`: the registered {"batch_size", "max_token_len"} (-1 when not registered)."""
        payload = self._json(self._request("GET", "/info"))
        if not isinstance(payload, dict) or "batch_size" not in payload:
            raise AtroposProtocolError(f"/info answered an unexpected shape: {payload!r}")
        return payload

    def register(
        self,
        *,
        batch_size: int,
        max_token_len: int,
        num_steps: int,
        starting_step: int = 0,
        checkpoint_dir: str = "",
        save_checkpoint_interval: int = -1,
        wandb_group: str = "verl_atropos",
        wandb_project: str = "verl_atropos",
    ) -> dict[str, Any]:
        """`POST /register`, then check `/info`: the server silently ignores a registration when it
        already holds one or when an environment posted first, so a mismatch raises."""
        payload = self._json(
            self._request(
                "POST",
                "/register",
                json_body={
                    "wandb_group": wandb_group,
                    "wandb_project": wandb_project,
                    "batch_size": batch_size,
                    "max_token_len": max_token_len,
                    "checkpoint_dir": checkpoint_dir,
                    "save_checkpoint_interval": save_checkpoint_interval,
                    "starting_step": starting_step,
                    "num_steps": num_steps,
                },
            )
        )
        info = self.info()
        if info.get("batch_size") != batch_size or info.get("max_token_len") != max_token_len:
            raise AtroposRegistrationError(
                f"registration did not take: /info reports batch_size={info.get('batch_size')}, "
                f"max_token_len={info.get('max_token_len')}, we sent batch_size={batch_size}, "
                f"max_token_len={max_token_len}. The server keeps its first registration and ignores one that "
                "comes after an environment posted data; restart run-api or call its /reset_data before training."
            )
        if self.max_token_len is None:
            self.max_token_len = max_token_len
        logger.info("Registered with Atropos at %s: batch_size=%d starting_step=%d", self.base_url, batch_size, starting_step)
        return payload

    def get_batch(self, *, budget_s: float | None = None) -> AtroposBatch | None:
        """One `GET /batch`: the validated batch, or None when the server has no full batch yet."""
        # run-api gzips at level 9 when asked (requests asks by default): about 0.6 s of its time per
        # 3.5 MB batch, more than the bytes take over any link faster than ~30 Mbit/s.
        encoding = {"Accept-Encoding": "gzip" if self.config.gzip_batches else "identity"}
        return self.batch_from_payload(self._pop_batch(budget_s=budget_s, headers=encoding).content)

    def _pop_batch(self, *, budget_s: float | None, headers: Mapping[str, str]) -> requests.Response:
        """`GET /batch`, which pops data on the server: sent again only while it has not reached the
        server (within `budget_s`, default max_wait_time); once sent, its answer is waited for up to
        `batch_read_timeout`, and a failure after sending is counted and raised, never retried blindly."""
        budget = self.config.max_wait_time if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        url = f"{self.base_url}/batch"

        def attempt() -> requests.Response:
            connect_timeout = max(0.05, min(self.config.timeout, deadline - time.monotonic()))
            try:
                response = self.session.get(url, timeout=(connect_timeout, self.config.batch_read_timeout), headers=headers)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if _never_reached_server(exc):
                    raise _NotSentError(str(exc)) from exc
                raise self._batch_failed_after_send(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code >= 500:
                self.stats.server_errors += 1
                # run-api answers 500 when it cannot encode the batch it just popped (a NaN score).
                raise self._batch_failed_after_send(f"HTTP {response.status_code}: {response.text[:200]}")
            if response.status_code >= 400:
                raise AtroposProtocolError(f"GET /batch answered HTTP {response.status_code}: {response.text[:500]}")
            return response

        retrying = self._retrying(_NotSentError, budget, "GET /batch could not be sent")
        try:
            return retrying(attempt)
        except _NotSentError as exc:
            raise AtroposUnavailableError(
                f"Atropos API at {self.base_url} unreachable for GET /batch (budget {budget:.1f}s, "
                f"{self.config.retry_attempts} attempts): {exc}. Is `run-api` running there? Check trainer.atropos.api_url."
            ) from exc

    def _batch_failed_after_send(self, what: str) -> AtroposBatchRequestFailedError:
        self.stats.batch_requests_failed_after_send += 1
        logger.error(
            "GET /batch failed after it reached the server (%s): a batch it popped may be lost "
            "(%d such request(s) so far). If this was a read timeout, raise trainer.atropos.batch_read_timeout "
            "(now %.0fs).", what, self.stats.batch_requests_failed_after_send, self.config.batch_read_timeout)
        return AtroposBatchRequestFailedError(f"GET /batch at {self.base_url} failed after it was sent: {what}")

    def batch_from_payload(self, payload: bytes) -> AtroposBatch | None:
        """The bytes of a `/batch` answer, decoded and validated (batch_payload.py)."""
        batch = decode_batch(payload, **self._limits())
        return None if batch is None else self._counted(batch)

    def validate_batch(self, raw_groups: list, *, payload_bytes: int = 0) -> AtroposBatch:
        """Validate decoded groups (a journal replay); invalid ones are dropped, logged, counted."""
        results: list[ScoredGroup | InvalidGroupError] = []
        for index, raw in enumerate(raw_groups):
            try:
                results.append(validate_group(raw, index, **self._limits()))
            except InvalidGroupError as exc:
                results.append(exc)
        return self._counted(AtroposBatch.from_results(results, payload_bytes=payload_bytes))

    def _limits(self) -> dict[str, int | None]:
        return {"vocab_size": self.vocab_size, "max_token_len": self.max_token_len, "max_prompt_len": self.max_prompt_len,
                "max_response_len": self.max_response_len}

    def _counted(self, batch: AtroposBatch) -> AtroposBatch:
        """The batch, each invalid group logged and counted by its field."""
        if self.config.env_ref_logprobs_only:
            batch.drop_where(_without_ref_logprobs)
        for bad in batch.invalid:
            logger.warning("Dropped invalid Atropos group: %s", bad.message)
        self.stats.batches += 1
        self.stats.groups_received += batch.received_groups
        self.stats.invalid_groups += len(batch.invalid)
        self.stats.invalid_reasons.update(bad.metric_key for bad in batch.invalid)
        return batch

    def poll_batch(self, max_wait_time: float | None = None, stop: threading.Event | None = None) -> AtroposBatch | None:
        """Poll `/batch` until a batch arrives or `max_wait_time` passes.

        The interval between polls of an empty queue starts at `poll_interval` and doubles up to
        `max_poll_interval`. Returns None when the server answered but had no batch in time, or
        when `stop` is set; raises AtroposUnavailableError when it could not be reached in time.
        """
        wait = self.config.max_wait_time if max_wait_time is None else max_wait_time
        started = time.monotonic()
        deadline = started + wait
        interval = self.config.poll_interval
        while True:
            remaining = deadline - time.monotonic()
            try:
                batch = self.get_batch(budget_s=max(remaining, 0.05))
            except AtroposUnavailableError:
                if time.monotonic() >= deadline:
                    raise
                batch = None
            if batch is not None:
                batch.wait_s = time.monotonic() - started
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("No Atropos batch within %.1fs from %s", wait, self.base_url)
                return None
            if stop is None:
                time.sleep(min(interval, remaining))
            elif stop.wait(min(interval, remaining)):
                return None
            interval = min(interval * 2, self.config.max_poll_interval)

    def trajectory_batch(self, max_wait_time: float | None = None) -> TrajectoryBatch | None:
        """`poll_batch` as the simplified API's flat `TrajectoryBatch` (None when no batch came)."""
        batch = self.poll_batch(max_wait_time)
        return None if batch is None else batch.trajectory_batch()
