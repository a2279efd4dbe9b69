"""The captioner interface and the one validation path every VLM backend shares.

A backend takes `CaptionRequest`s (a clip's frames, their indices, measured hints) and returns one
`CaptionResult` per request, in order, never raising for a single clip: status "ok" with validated
caption JSON, or "failed" with an error kind and the raw text kept.

Error kinds: `invalid_caption` (output that is not a valid caption after the one repair attempt:
truncated at max_tokens, not JSON, outside the schema), `timeout` (no answer within the deadline),
`server_error` (the engine or server failed: connection lost after the retries, 5xx, an engine-side
error such as a grammar that did not compile), `request_error` (the server refused the request: 4xx).

`VLMCaptioner` holds the shared flow: build the chat, generate for the whole batch, check each answer
(finish_reason "length" means truncated, so invalid; then parse and validate with the pydantic model),
re-ask once for the invalid ones with the validation error in the conversation, then give up with the
raw text kept. Subclasses only implement `generate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np

from captioner.prompt import build_messages, prompt_hash, repair_messages
from captioner.schema import SCHEMA_VERSION, CaptionError, parse_caption

INVALID, TIMEOUT, SERVER_ERROR, REQUEST_ERROR = "invalid_caption", "timeout", "server_error", "request_error"


@dataclass
class CaptionRequest:
    clip_id: str
    frames: list[np.ndarray]
    frame_indices: list[int] = field(default_factory=list)
    hints: dict = field(default_factory=dict)


@dataclass
class CaptionResult:
    clip_id: str
    status: str  # "ok" | "failed"
    caption: str | None = None  # validated caption JSON
    raw: str | None = None  # the model's last answer, kept on failure too
    error_kind: str | None = None
    error: str | None = None
    source: dict = field(default_factory=dict)  # backend, model, schema_version, prompt_hash, frame_indices
    finish_reason: str | None = None
    attempts: int = 0  # generations asked for (1, or 2 with a repair)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """One answer of an engine: text and finish reason, or a transport/engine failure."""

    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_kind: str | None = None
    error: str | None = None


class Captioner(ABC):
    """setup() loads heavy state; caption_batch() returns one result per request, in order."""

    name = "captioner"

    def setup(self) -> None:
        pass

    def source(self, request: CaptionRequest) -> dict:
        """What a caption of `request` records as its source (the step compares backend, model, schema
        version and prompt hash to decide whether an existing caption is current)."""
        return {"backend": self.name, "model": None, "schema_version": SCHEMA_VERSION, "prompt_hash": None,
                "frame_indices": list(request.frame_indices)}

    @abstractmethod
    def caption_batch(self, requests: list[CaptionRequest]) -> list[CaptionResult]: ...

    def close(self) -> None:
        pass

    def __enter__(self):
        self.setup()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check(gen: Generation, complete: bool = True) -> tuple[str | None, str | None, str | None]:
    """(caption JSON, error kind, error) for one generation; the caption is re-serialised compactly."""
    if gen.error_kind:
        return None, gen.error_kind, gen.error
    if gen.finish_reason == "length":
        return None, INVALID, f"the answer was cut at max_tokens ({gen.completion_tokens} tokens): incomplete JSON"
    if gen.finish_reason not in (None, "stop"):
        return None, SERVER_ERROR, f"the engine ended the answer with finish_reason={gen.finish_reason!r}"
    try:
        caption = parse_caption(gen.text or "", complete=complete)
    except CaptionError as e:
        return None, INVALID, str(e)
    return caption.model_dump_json(), None, None


class VLMCaptioner(Captioner):
    """Shared flow of the VLM backends; subclasses set `image_format`, `model` and implement `generate`."""

    image_format = "pil"
    model = ""
    repair = True
    structured = True

    @abstractmethod
    def generate(self, conversations: list[list[dict]]) -> list[Generation]:
        """One generation per conversation, in order; failures as Generation(error_kind=...)."""

    def source(self, request: CaptionRequest) -> dict:
        return {"backend": self.name, "model": self.model, "schema_version": SCHEMA_VERSION,
                "prompt_hash": prompt_hash(), "frame_indices": list(request.frame_indices),
                "structured": self.structured}

    def caption_batch(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        convs = [build_messages(r.frames, r.hints, self.image_format, r.frame_indices) for r in requests]
        gens = self.generate(convs)
        results = [self._result(r, [g]) for r, g in zip(requests, gens)]
        again = [i for i, res in enumerate(results) if res.error_kind == INVALID] if self.repair else []
        if again:
            asks = [repair_messages(convs[i], gens[i].text, results[i].error) for i in again]
            for i, gen in zip(again, self.generate(asks)):
                results[i] = self._result(requests[i], [gens[i], gen])
        return results

    def _result(self, request: CaptionRequest, gens: list[Generation]) -> CaptionResult:
        last = gens[-1]
        caption, kind, error = check(last)
        if kind and len(gens) > 1:
            error = f"{error} (after a repair attempt; first answer: {check(gens[0])[2]})"
        raw = next((g.text for g in reversed(gens) if g.text is not None), None)
        return CaptionResult(
            clip_id=request.clip_id, status="failed" if kind else "ok", caption=caption, raw=raw,
            error_kind=kind, error=error, source=self.source(request), finish_reason=last.finish_reason,
            attempts=len(gens), prompt_tokens=sum(g.prompt_tokens for g in gens),
            completion_tokens=sum(g.completion_tokens for g in gens))
