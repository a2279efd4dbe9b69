"""Structured JSON captions with a VLM (vLLM offline engine or an OpenAI-compatible server)."""
