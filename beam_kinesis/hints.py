"""Beam type hints of the public transforms' elements, named once for every transform."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from beam_kinesis.counts import FileStats
from beam_kinesis.engine.rules import Change

__all__ = ['DeadLetter', 'KinesisRecord', 'ProfileChange', 'ReadStats', 'Stats']

# A dead letter: `stage`, `error`, `source`, `record` (and a write's `key`), see deadletter.
DeadLetter = Dict[str, Any]
# Counts of a step, by declared name (`counts.Counts`: `profiles_compared`, ...).
Stats = Dict[str, int]
# What the read of one snapshot file saw (the input ledger's read side).
ReadStats = FileStats
# What WriteToKinesis takes: `(partition_key, data)`, the profile key and the record's bytes.
KinesisRecord = Tuple[str, bytes]
# What DetectChanges finds and FormatExport takes: `(profile_key, Change)`.
ProfileChange = Tuple[str, Change]
