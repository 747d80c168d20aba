"""The filter database: a SQLite catalog plus append-only raw float32 segment files.

See :mod:`filterdb.store.database` (API), :mod:`filterdb.store.ingest` (the crash-safe
write protocol), :mod:`filterdb.store.query` (selections and streaming) and
:mod:`filterdb.store.vocab` (metadata columns and values).
"""
from .database import DEFAULT_SEGMENT_ROWS, Database, init_database, is_database, open_database
from .ingest import AddResult, layer_checksum
from .query import FilterChunk
from .segments import aligned_empty, read_rows

__all__ = ["Database", "open_database", "init_database", "is_database", "AddResult",
           "FilterChunk", "read_rows", "aligned_empty", "layer_checksum", "DEFAULT_SEGMENT_ROWS"]
