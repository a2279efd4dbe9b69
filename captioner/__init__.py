"""Structured JSON captions with a VLM (vLLM offline engine or an OpenAI-compatible server), or from the
measurements alone (`signals`), as the global step `caption`; caption synthesis for training prompts.

`STAGES` registers the step with the framework through the `videocurate.stages` entry point
(pyproject.toml), the same way a third-party package adds its own."""

STAGES = {"caption": "captioner.step:CaptionStep"}
