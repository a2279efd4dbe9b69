"""videocurate's spine: clip schema, probe/decode, scene split, Ray runner, Lance lake, DuckDB queries."""

import os

__version__ = "0.1.0"

# Lance's Rust logger writes WARN lines to stderr ("No existing dataset at ... it will be created" for every
# new table of a run) unless told otherwise when lance is first imported, wherever that happens first
os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("RUST_LOG", "error")
