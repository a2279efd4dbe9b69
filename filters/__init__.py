"""The filter bank: scorers that add score columns (clarity, motion and camera movement, OCR text,
borders, aesthetics, embeddings) to clip rows. Decisions on those columns are made later, in SQL."""
