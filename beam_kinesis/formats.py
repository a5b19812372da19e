"""The one place that decides a snapshot file's format from its name.

The reader, the input ledger, the converter and the benchmarks' reference all need it; when
each kept its own table of endings they drifted apart (the converter did not know `.pq`).
This module imports nothing heavy, so that anything may use it.
"""

from __future__ import annotations

__all__ = ['FORMATS', 'COMPRESSED_ENDING', 'format_of_name']

# Input formats and the file name endings (after an optional `.gz`) that select them.
FORMATS: dict[str, tuple[str, ...]] = {
    'jsonl': ('.jsonl', '.json', '.ndjson'),
    'avro': ('.avro',),
    'parquet': ('.parquet', '.pq'),
}

# A compressed JSON Lines file keeps its own ending before this one.
COMPRESSED_ENDING = '.gz'


def format_of_name(name: str) -> str | None:
    """The format a file name's ending says (case-insensitive, a trailing `.gz` ignored), or
    None when the ending is not one of `FORMATS`'."""
    name = name.lower().removesuffix(COMPRESSED_ENDING)
    for fmt, endings in FORMATS.items():
        if name.endswith(endings):
            return fmt
    return None
