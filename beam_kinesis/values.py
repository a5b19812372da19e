"""JSON values: what a value read from JSON, Avro or Parquet becomes so that all compare alike."""

from __future__ import annotations

import datetime
import decimal
import math
from typing import Any

__all__ = ['MAX_NESTING_DEPTH', 'normalize_value', 'may_hold_big_integers']

# Objects and arrays nested deeper than this in a value the job reads are refused before
# anything recurses into them. Real profiles nest a dozen levels at most; every recursive step
# after the read stays far from its own limit at 64: Python's call stack (1,000 frames, two
# per level here, beside the runner's own frames), orjson's serialiser (254 levels) and the
# standard library's json (about 1,000). orjson's parser refuses more than 1,024 levels in a
# line; a value between 64 and 1,024 levels deep is refused here.
MAX_NESTING_DEPTH = 64

# A JSON number token of 20 digits or more is beyond what orjson parses exactly. It follows
# a `:`, `,` or `[`, perhaps after white space and a minus; digit runs inside strings (ECIDs)
# follow a quote and do not count. Found in C: digits become `0`, the three openers `:`,
# white space and minus signs are dropped, everything else becomes `x`, then one `find`.
_TOKEN_SHAPES = bytes(
    ord('0') if chr(byte).isdigit() and byte < 128 else ord(':') if chr(byte) in ':,[' else ord('x')
    for byte in range(256)
)
_DROPPED = b' \t\r\n-'
_BIG_INTEGER = b':' + b'0' * 20


def may_hold_big_integers(data: bytes) -> bool:
    """Whether JSON text may hold an integer beyond 64 bits, which orjson would silently
    turn into a float; such text is parsed with the standard library instead. A string
    holding `:` and 20 digits is a false alarm, which costs only time."""
    return _BIG_INTEGER in data.translate(_TOKEN_SHAPES, _DROPPED)


def normalize_value(value: Any, depth: int = 0) -> Any:
    """Turns a value read from JSON, Avro or Parquet into the one JSON form they share.

    Nulls inside objects are dropped (a field that is null is a field that is absent), Arrow
    maps read as `(key, value)` pairs become objects, dates become `YYYY-MM-DD`, times UTC
    `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, decimals numbers, and tuples lists.

    Args:
      value: the value.
      depth: how many objects and arrays enclose it (for the nesting limit).

    Raises:
      ValueError: a value JSON cannot carry (binary that is not UTF-8 text, NaN, infinity),
        or objects and arrays nested deeper than `MAX_NESTING_DEPTH`.
    """
    if isinstance(value, (dict, list, tuple)):
        depth += 1
        if depth > MAX_NESTING_DEPTH:
            raise ValueError(
                f'objects and arrays are nested more than {MAX_NESTING_DEPTH} levels deep'
            )
    if isinstance(value, dict):
        return {
            key: normalize_value(item, depth) for key, item in value.items() if item is not None
        }
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
            return {key: normalize_value(item, depth) for key, item in value if item is not None}
        return [normalize_value(item, depth) for item in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f'the number {value!r} has no JSON form')
        return value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat() + 'Z'
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f'the decimal {value} has no JSON form')
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode('utf-8')
        except UnicodeDecodeError as err:
            raise ValueError('a binary value is not UTF-8 text') from err
    raise ValueError(f'a value of type {type(value).__name__} has no JSON form')


def arrow_to_pylist(array) -> list:
    """An Arrow array as Python values, maps as dicts, converted column by column.

    Arrow's own `to_pylist(maps_as_pydicts=...)` builds maps element by element and is about
    five times slower on the nested maps of a profile (`segmentMembership`). A key that
    occurs twice in one map keeps its last value.
    """
    import pyarrow as pa

    kind = array.type
    if pa.types.is_map(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = array.offsets.to_pylist()
        first, last = offsets[0], offsets[-1]
        if pa.types.is_map(kind):
            keys = array.keys.slice(first, last - first).to_pylist()
            values = arrow_to_pylist(array.items.slice(first, last - first))
            rows = [
                dict(zip(keys[start - first : end - first], values[start - first : end - first]))
                for start, end in zip(offsets, offsets[1:])
            ]
        else:
            values = arrow_to_pylist(array.values.slice(first, last - first))
            rows = [values[start - first : end - first] for start, end in zip(offsets, offsets[1:])]
    elif pa.types.is_struct(kind):
        names = [kind.field(index).name for index in range(kind.num_fields)]
        columns = [arrow_to_pylist(child) for child in array.flatten()]
        rows = (
            [dict(zip(names, values)) for values in zip(*columns)]
            if columns
            else [{} for _ in range(len(array))]
        )
    else:
        return array.to_pylist()
    if array.null_count:
        rows = [row if valid else None for row, valid in zip(rows, array.is_valid().to_pylist())]
    return rows
