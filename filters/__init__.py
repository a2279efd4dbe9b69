"""The filter bank: scorers that add score columns (clarity, motion and camera movement, OCR text,
borders, aesthetics, embeddings) to clip rows. Decisions on those columns are made later, in SQL.

`STAGES` registers them with the framework through the `videocurate.stages` entry point (pyproject.toml),
the same way a third-party package adds its own."""

STAGES = {
    "clarity": "filters.clarity:ClarityScorer",
    "motion": "filters.motion:MotionScorer",
    "ocr": "filters.ocr:OcrScorer",
    "borders": "filters.borders:BorderScorer",
    "aesthetic": "filters.aesthetic:AestheticScorer",
    "embedding": "filters.embedding:PerceptualEmbeddingScorer",
    "clip_embedding": "filters.embedding:ClipEmbeddingScorer",
}
