"""The OpenAI-compatible server backend (vLLM's server or any peer that speaks the chat API with
`response_format={"type": "json_schema", ...}`): the async openai client, frames as base64 data URLs,
at most `concurrency` requests in flight.

Failure handling, per request: connection errors and 5xx (and 429) are retried `retries` times with
exponential backoff (backoff_s, 2 backoff_s, ...), then become `server_error`; a request that has no
answer within `timeout_s` becomes `timeout` and is not retried (a hung server would multiply the wait);
a 4xx is `request_error`. `timeout_s` is a hard deadline per attempt (asyncio.wait_for around the
client's own timeout), so a server that accepts the connection and never answers cannot hang a batch:
a batch ends within about (retries + 1) x timeout_s + the backoff sleeps per concurrency slot.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from captioner.backend import REQUEST_ERROR, SERVER_ERROR, TIMEOUT, Generation, VLMCaptioner
from captioner.schema import SCHEMA_VERSION, engine_schema


@dataclass
class ServerConfig:
    """base_url: e.g. http://127.0.0.1:8000/v1. model: the served name (None: the first of /v1/models).
    image_format: png or jpeg data URLs. structured=False sends no response_format (benchmarks only)."""

    base_url: str
    model: str | None = None
    api_key: str = "EMPTY"
    max_tokens: int = 1024
    temperature: float = 0.0
    concurrency: int = 8
    timeout_s: float = 60.0
    retries: int = 2
    backoff_s: float = 0.5
    image_format: str = "png"
    structured: bool = True
    repair: bool = True


class ServerCaptioner(VLMCaptioner):
    name = "openai_server"

    def __init__(self, config: ServerConfig):
        self.config = config
        self.model = config.model or ""
        self.image_format = config.image_format
        self.structured, self.repair = config.structured, config.repair

    def _client(self):
        from openai import AsyncOpenAI

        # retries are ours (with backoff and error kinds); the client's timeout is the per-attempt one
        return AsyncOpenAI(base_url=self.config.base_url, api_key=self.config.api_key, max_retries=0,
                           timeout=self.config.timeout_s)

    def setup(self) -> None:
        if not self.model:
            self.model = asyncio.run(self._first_model())

    async def _first_model(self) -> str:
        async with self._client() as client:
            models = await asyncio.wait_for(client.models.list(), self.config.timeout_s)
            return models.data[0].id

    def generate(self, conversations: list[list[dict]]) -> list[Generation]:
        self.setup()
        return asyncio.run(self.agenerate(conversations))

    async def agenerate(self, conversations: list[list[dict]]) -> list[Generation]:
        sem = asyncio.Semaphore(self.config.concurrency)
        async with self._client() as client:
            return list(await asyncio.gather(*(self._one(client, sem, c) for c in conversations)))

    def _kwargs(self, messages: list[dict]) -> dict:
        kw = dict(model=self.model, messages=messages, max_tokens=self.config.max_tokens,
                  temperature=self.config.temperature, timeout=self.config.timeout_s)
        if self.structured:
            kw["response_format"] = {"type": "json_schema", "json_schema": {
                "name": f"caption_v{SCHEMA_VERSION}", "schema": engine_schema(), "strict": True}}
        return kw

    async def _one(self, client, sem: asyncio.Semaphore, messages: list[dict]) -> Generation:
        import openai

        c = self.config
        async with sem:
            last = ""
            for attempt in range(c.retries + 1):
                if attempt:
                    await asyncio.sleep(c.backoff_s * 2 ** (attempt - 1))
                try:
                    resp = await asyncio.wait_for(client.chat.completions.create(**self._kwargs(messages)),
                                                  c.timeout_s + 1.0)
                except (openai.APITimeoutError, asyncio.TimeoutError):
                    return Generation(None, error_kind=TIMEOUT, error=f"no answer within {c.timeout_s} s")
                except openai.APIConnectionError as e:
                    last = f"connection failed: {e}"
                    continue
                except openai.APIStatusError as e:
                    if e.status_code >= 500 or e.status_code == 429:
                        last = f"HTTP {e.status_code}: {str(e)[:300]}"
                        continue
                    return Generation(None, error_kind=REQUEST_ERROR, error=f"HTTP {e.status_code}: {str(e)[:300]}")
                except Exception as e:  # an answer the client cannot read (not JSON, not OpenAI)
                    return Generation(None, error_kind=SERVER_ERROR, error=f"{type(e).__name__}: {str(e)[:300]}")
                return _generation(resp)
            return Generation(None, error_kind=SERVER_ERROR, error=f"{last} (after {c.retries + 1} attempts)")


def _generation(resp) -> Generation:
    choices = getattr(resp, "choices", None)
    if not choices:
        return Generation(None, error_kind=SERVER_ERROR, error=f"an answer without choices: {str(resp)[:300]}")
    usage = getattr(resp, "usage", None)
    return Generation(choices[0].message.content, choices[0].finish_reason,
                      getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)
