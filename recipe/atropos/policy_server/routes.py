"""HTTP shapes of the policy server that environments call (served by `InferenceService`).

- Atropos's own contract for `--openai.server_type vllm` (what `VLLMServer` and `ManagedServer`
  post): `POST /generate` with `{"prompt": {"prompt_token_ids": [...]}, "logprobs": 0, "n", ...}`,
  answered with `text`, `finish_reasons`, `logprobs` (`[[{"<id>": logprob}], ...]` per completion),
  `prompt_token_ids`, `token_ids`; and `GET /health` (polled every second by environments).
- SGLang's native `/generate` for `--openai.server_type sglang` (what `SGLangServer` posts for tokens
  and log-probs): `{"input_ids": [...], "sampling_params": {...}, "return_logprob": true}`, answered per
  completion with `text`, `output_ids` and `meta_info` (`output_token_logprobs` as `[logprob, id,
  null]`, `finish_reason` as `{"type": ...}`); one object for n=1, a list otherwise. The same path as
  the vLLM shape: a body with `input_ids` is SGLang's.
- `trl vllm-serve`'s `POST /generate/` for `--openai.server_type trl` (under `/v1` too: that client
  does not strip it from `--openai.base_url`): `{"prompts": [text, ...], "n", ...}`, answered with
  `completion_ids`, every prompt's n completions in order.
- OpenAI's `/v1/completions`, `/v1/chat/completions` and `/v1/models` for `--openai.server_type openai`
  (and for the chat and completion calls of `sglang`).

Every answer carries `policy_version` (the global step of the oldest weights that produced it);
`/generate` also `policy_version_span`, `[oldest, newest]` per completion (they differ when weights
were updated while it was decoded, after a drain timeout).
Bad requests get 400 naming the field; a request that waited too long at the weight-sync gate, 503.
A request asking for more completions (`n`) or tokens (`max_tokens`) than the run trains on is
refused with 400 naming the field and the setting (`RequestLimits`), and counted.
Authentication is in front of these routes (`service.py` wraps the app in auth/asgi_guard.py).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from recipe.atropos.policy_server.proxy import Completion, InferenceProxy, ProxyUnavailableError
from recipe.atropos.policy_server.template_framing import assistant_turn_framing, chat_ids

logger = logging.getLogger(__name__)

# Sampling keys handed on to verl's replica servers unchanged (a backend that does not apply some of
# them names those in RequestLimits.not_applied: requests asking for them are refused).
_PASSTHROUGH_SAMPLING = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "stop_token_ids", "repetition_penalty",
    "presence_penalty", "frequency_penalty", "min_tokens", "seed", "ignore_eos",
)
# The value that changes nothing, for each key a backend may not apply (hf_cpu's NOT_APPLIED_SAMPLING):
# sent with it, the key is accepted.
_NEUTRAL_SAMPLING = {
    "stop": lambda value: not value, "repetition_penalty": lambda value: value == 1,
    "presence_penalty": lambda value: value == 0, "frequency_penalty": lambda value: value == 0,
}


class RequestError(ValueError):
    """A request field is missing or malformed (answered as HTTP 400 naming the field)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field '{field}': {reason}")
        self.field = field


class OverLimitError(RequestError):
    """A request asks for more than `RequestLimits` allows (400, counted as refused `over_limit`)."""


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Most completions and tokens one request may ask for (None: no cap); `settings` names the keys."""

    max_n: int | None = None
    max_tokens: int | None = None
    n_setting: str = "trainer.atropos_inference.max_n"
    tokens_setting: str = "trainer.atropos_inference.max_tokens"
    not_applied: tuple[str, ...] = ()  # sampling keys the rollout backend does not apply
    backend: str = ""

    def check(self, params: Mapping[str, Any], n: int) -> None:
        for key in self.not_applied:
            if key in params and not _NEUTRAL_SAMPLING.get(key, lambda value: False)(params[key]):
                raise RequestError(key, f"{params[key]!r} is not applied by the {self.backend} rollout (it would sample "
                                        "from another distribution than asked): leave it out or serve with vllm")
        if self.max_n is not None and n > self.max_n:
            raise OverLimitError("n", f"{n} completions asked, at most {self.max_n} per request ({self.n_setting})")
        tokens = params.get("max_tokens")
        if self.max_tokens is not None and tokens is not None and tokens > self.max_tokens:
            raise OverLimitError("max_tokens", f"{tokens} asked, at most {self.max_tokens} per completion "
                                 f"({self.tokens_setting})")

    def check_prompts(self, prompts: int, n: int, field: str) -> None:
        """A request with several prompts: n completions of each count against `max_n` together."""
        if self.max_n is not None and n * prompts > self.max_n:
            raise OverLimitError(field, f"{prompts} prompts x n={n} completions asked, at most {self.max_n} per "
                                 f"request ({self.n_setting})")


def _token_ids(value: Any, field: str, vocab_size: int) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise RequestError(field, "must be a non-empty list of token ids (integers)")
    bad = [t for t in value if not 0 <= t < vocab_size]
    if bad:
        raise RequestError(field, f"token ids {bad[:5]} are outside the tokenizer's range [0, {vocab_size})")
    return value


def sampling_params(body: Mapping[str, Any], default_max_tokens: int | None,
                    limits: RequestLimits = RequestLimits()) -> tuple[dict[str, Any], int]:
    """verl sampling params and `n` from an Atropos/vLLM/OpenAI request body, within `limits`."""
    params = {key: body[key] for key in _PASSTHROUGH_SAMPLING if body.get(key) is not None}
    for alias in ("max_completion_tokens", "max_new_tokens"):
        if body.get(alias) is not None:
            params["max_tokens"] = body[alias]
    if "max_tokens" not in params and default_max_tokens is not None:
        params["max_tokens"] = default_max_tokens
    for key, kind in (("temperature", float), ("top_p", float), ("top_k", int), ("min_p", float), ("max_tokens", int)):
        if key in params:
            try:
                params[key] = kind(params[key])
            except (TypeError, ValueError):
                raise RequestError(key, f"must be a number, got {params[key]!r}") from None
    if params.get("max_tokens", 1) < 1:
        raise RequestError("max_tokens", f"must be >= 1, got {params['max_tokens']}")
    n = body.get("n")
    n = 1 if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise RequestError("n", f"must be a positive integer, got {n!r}")
    limits.check(params, n)
    return params, n


class PolicyApi:
    """The request parsing and response shaping behind the routes (see the module docstring)."""

    def __init__(self, proxy: InferenceProxy, tokenizer: Any, model_name: str,
                 limits: RequestLimits = RequestLimits()) -> None:
        self.proxy = proxy
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.limits = limits
        self.refused: collections.Counter[str] = collections.Counter()  # reason -> requests refused
        self.vocab_size = len(tokenizer)
        self.proxy.registry.set_template_framing(*assistant_turn_framing(tokenizer))

    def _prompt_ids(self, prompt: Any, field: str) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise RequestError(field, "must not be empty")
            return self.tokenizer.encode(prompt)
        return _token_ids(prompt, field, self.vocab_size)

    def _text(self, completion: Completion, skip_special_tokens: bool = True) -> str:
        """The completion as text (the OpenAI routes' answer). An environment re-tokenises that text,
        which may give other ids than the served ones: those are recorded with the same version too,
        so the trainer can still tell which policy wrote it."""
        text = self.tokenizer.decode(completion.token_ids, skip_special_tokens=skip_special_tokens)
        retokenised = self.tokenizer.encode(text, add_special_tokens=False)
        if retokenised != completion.token_ids:
            self.proxy.registry.record(retokenised, completion.policy_version)
        return text

    def _record_assistant_turn(self, messages: list, prompt_ids: list[int], text: str, version: int) -> None:
        """Record the answer as the chat template frames it after the prompt, the tokens atroposlib's
        `tokenize_for_trainer` marks as the completion (the content, then the template's end of turn,
        e.g. `<|im_end|>` and a newline; think-block or other framing the template puts around an
        assistant turn), so a group built that way has a known version."""
        try:
            full = chat_ids(self.tokenizer, [*messages, {"role": "assistant", "content": text}], False)
        except Exception as exc:  # noqa: BLE001 (a template may refuse a conversation it served: then no record)
            logger.debug("cannot render the assistant turn for the version registry: %s", exc)
            return
        if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
            self.proxy.registry.record(full[len(prompt_ids):], version)

    def _token_texts(self, token_ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([t]) for t in token_ids]

    async def generate(self, body: Mapping[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """Atropos's `/generate`: SGLang's shape when the body has `input_ids`, else vLLM api_server's."""
        if "input_ids" in body:
            return await self.sglang_generate(body)
        prompt = body.get("prompt")
        if isinstance(prompt, Mapping):
            prompt_ids = _token_ids(prompt.get("prompt_token_ids"), "prompt.prompt_token_ids", self.vocab_size)
        elif prompt is not None:
            prompt_ids = self._prompt_ids(prompt, "prompt")
        else:
            raise RequestError("prompt", "required: {'prompt_token_ids': [...]} or a string")
        params, n = sampling_params(body, default_max_tokens=None, limits=self.limits)
        completions = await self.proxy.generate(prompt_ids, params, n)
        answer: dict[str, Any] = {
            "text": [self.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in completions],
            "prompt": self.tokenizer.decode(prompt_ids),
            "finish_reasons": [c.finish_reason for c in completions],
            "prompt_token_ids": prompt_ids,
            "token_ids": [c.token_ids for c in completions],
            "policy_version": min(c.policy_version for c in completions),
            "policy_version_span": [[c.policy_version, c.newest_policy_version] for c in completions],
        }
        if body.get("logprobs") is not None:
            answer["logprobs"] = [
                [[{str(token): logprob}] for token, logprob in zip(c.token_ids, c.logprobs)] for c in completions
            ]
        return answer

    async def sglang_generate(self, body: Mapping[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """SGLang's native `/generate` (module docstring)."""
        prompt_ids = _token_ids(body.get("input_ids"), "input_ids", self.vocab_size)
        sampling = body.get("sampling_params") or {}
        if not isinstance(sampling, Mapping):
            raise RequestError("sampling_params", "must be an object")
        params, n = sampling_params(sampling, default_max_tokens=None, limits=self.limits)
        completions = await self.proxy.generate(prompt_ids, params, n)
        answers = [{
            "text": self.tokenizer.decode(c.token_ids, skip_special_tokens=True),
            "output_ids": c.token_ids,
            "meta_info": {
                "id": uuid.uuid4().hex,
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": len(c.token_ids),
                "finish_reason": {"type": c.finish_reason},
                "output_token_logprobs": [[logprob, token, None] for token, logprob in zip(c.token_ids, c.logprobs)],
                "policy_version": c.policy_version,
            },
        } for c in completions]
        return answers[0] if n == 1 else answers

    async def trl_generate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`trl vllm-serve`'s `/generate/` (module docstring)."""
        prompts = body.get("prompts")
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise RequestError("prompts", "must be a non-empty list of strings")
        params, n = sampling_params(body, default_max_tokens=None, limits=self.limits)
        self.limits.check_prompts(len(prompts), n, "prompts")
        completion_ids: list[list[int]] = []
        served: list[Completion] = []
        for index, prompt in enumerate(prompts):
            completions = await self.proxy.generate(self._prompt_ids(prompt, f"prompts[{index}]"), params, n)
            for completion in completions:
                self._text(completion, skip_special_tokens=False)  # the client decodes them with special tokens
                completion_ids.append(completion.token_ids)
            served.extend(completions)
        return {"completion_ids": completion_ids, "policy_version": min(c.policy_version for c in served)}

    def _envelope(self, kind: str, choices: list[dict], prompt_tokens: int, completions: list[Completion]) -> dict[str, Any]:
        completion_tokens = sum(len(c.token_ids) for c in completions)
        return {
            "id": f"{kind}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "policy_version": min(c.policy_version for c in completions),
        }

    async def completions(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """OpenAI `/v1/completions`: a string, a token-id list, or a list of either."""
        if body.get("echo"):
            raise RequestError("echo", "is not supported")
        prompt = body.get("prompt")
        if prompt is None:
            raise RequestError("prompt", "required")
        prompts = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)) else [prompt]
        params, n = sampling_params(body, default_max_tokens=16, limits=self.limits)
        self.limits.check_prompts(len(prompts), n, "prompt")
        want_logprobs = body.get("logprobs") is not None
        choices: list[dict] = []
        served: list[Completion] = []
        prompt_tokens = 0
        for index, one in enumerate(prompts):
            prompt_ids = self._prompt_ids(one, f"prompt[{index}]" if len(prompts) > 1 else "prompt")
            prompt_tokens += len(prompt_ids)
            completions = await self.proxy.generate(prompt_ids, params, n)
            served.extend(completions)
            for completion in completions:
                choice = {
                    "index": len(choices),
                    "text": self._text(completion),
                    "finish_reason": completion.finish_reason,
                    "logprobs": None,
                }
                if want_logprobs:
                    texts = self._token_texts(completion.token_ids)
                    offsets = [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
                    choice["logprobs"] = {"tokens": texts, "token_logprobs": completion.logprobs,
                                          "top_logprobs": None, "text_offset": offsets}
                choices.append(choice)
        return self._envelope("text_completion", choices, prompt_tokens, served)

    async def chat_completions(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """OpenAI `/v1/chat/completions` through the tokenizer's chat template."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) and "role" in m for m in messages):
            raise RequestError("messages", "must be a non-empty list of {'role': ..., 'content': ...}")
        prompt_ids = chat_ids(self.tokenizer, messages, add_generation_prompt=True)
        params, n = sampling_params(body, default_max_tokens=None, limits=self.limits)
        completions = await self.proxy.generate(prompt_ids, params, n)
        choices = []
        for index, completion in enumerate(completions):
            text = self._text(completion)
            self._record_assistant_turn(messages, prompt_ids, text, completion.policy_version)
            choice = {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [
                    {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []}
                    for text, logprob in zip(self._token_texts(completion.token_ids), completion.logprobs)
                ]}
            choices.append(choice)
        return self._envelope("chat.completion", choices, len(prompt_ids), completions)


def build_app(api: PolicyApi) -> FastAPI:
    """The FastAPI app serving `api` (routes listed in the module docstring)."""
    app = FastAPI(title="verl policy server for Atropos environments")

    async def answer(handler: Any, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "body must be JSON", "param": None}}, status_code=400)
        if not isinstance(body, Mapping):
            return JSONResponse({"error": {"message": "body must be a JSON object", "param": None}}, status_code=400)
        try:
            return JSONResponse(await handler(body))
        except OverLimitError as exc:
            api.refused["over_limit"] += 1
            logger.warning("refused a request: %s", exc)
            return JSONResponse({"error": {"message": str(exc), "param": exc.field, "type": "invalid_request_error"}},
                                status_code=400)
        except RequestError as exc:
            return JSONResponse({"error": {"message": str(exc), "param": exc.field, "type": "invalid_request_error"}},
                                status_code=400)
        except ProxyUnavailableError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "unavailable"}}, status_code=503)
        except ValueError as exc:  # e.g. the prompt leaves no room within the model's context
            return JSONResponse({"error": {"message": str(exc), "param": "prompt", "type": "invalid_request_error"}},
                                status_code=400)

    @app.get("/health")
    async def health() -> JSONResponse:
        proxy = api.proxy
        return JSONResponse({"status": "ok", "policy_version": proxy.policy_version,
                             "accepting_requests": proxy.is_open, "in_flight": proxy.in_flight})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": api.model_name, "object": "model", "owned_by": "verl"}]})

    @app.post("/generate")
    async def generate(request: Request) -> JSONResponse:
        return await answer(api.generate, request)

    @app.post("/generate/")
    @app.post("/v1/generate/")
    async def trl_generate(request: Request) -> JSONResponse:
        return await answer(api.trl_generate, request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        return await answer(api.completions, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        return await answer(api.chat_completions, request)

    return app
