"""Beam type hints of the public transforms' elements, named once for every transform."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from beam_kinesis.engine.rules import Change

__all__ = ['DeadLetter', 'KinesisRecord', 'ProfileChange', 'Stats']

# A dead letter: `stage`, `error`, `source`, `record` (and a write's `key`), see deadletter.
DeadLetter = Dict[str, Any]
# Counts of a step, by name (`profiles_compared`, `exported_<reason>`, a file's stats...).
Stats = Dict[str, Any]
# What WriteToKinesis takes: `(partition_key, data)`, the profile key and the record's bytes.
KinesisRecord = Tuple[str, bytes]
# What DetectChanges finds and FormatExport takes: `(profile_key, Change)`.
ProfileChange = Tuple[str, Change]
