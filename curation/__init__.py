"""videocurate's spine: clip schema, probe/decode, scene split, Ray runner, Lance lake, DuckDB queries."""

__version__ = "0.1.0"
