"""Format export: the destination's JSON record for each profile to export."""

from __future__ import annotations

import json

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from beam_kinesis import counts
from beam_kinesis.config import SEGMENT_SCOPES, DestinationConfig
from beam_kinesis.counts import Counts
from beam_kinesis.deadletter import DEAD_LETTER, STAGE_FORMAT, dead_letter
from beam_kinesis.engine.rules import REASONS, Change, MappedSegments
from beam_kinesis.engine.view import MEMBER_STATUSES, ProfileView
from beam_kinesis.hints import DeadLetter, KinesisRecord, ProfileChange, Stats
from beam_kinesis.tagged import split_tagged

__all__ = ['FormatExport', 'to_export_record', 'encode_record']


def _segment_entry(status: str, qualified: str | None) -> dict:
    if qualified is None:
        return {'status': status}
    return {'lastQualificationTime': qualified, 'status': status}


def to_export_record(
    change: Change, mapped, as_of: str, *, segment_fields=None, segment_scope: str = 'all'
) -> dict:
    """The export record of a profile (SPEC sections 4 and 7).

    A current profile exports its mapped attributes, all its segments, with an `exited`
    entry stamped `as_of` for each mapped segment it has left by disappearing from, and all
    its identities. A deleted profile exports its previous segments, members turned
    `exited` at `as_of`, and its previous identities, without attributes.

    Args:
      change: the profile to export.
      mapped: the segments mapped in this run, `(namespace, segment_id)` pairs.
      as_of: the time stamped on synthesised `exited` entries.
      segment_fields: audience metadata to add to the entries of segments, by
        `(namespace, segment_id)` (`DestinationConfig.segment_fields()`); every entry of
        such a segment gets them, synthesised exits included.
      segment_scope: `all` keeps every segment; `mapped` only the mapped ones.
    """
    previous, current = change.previous, change.current
    record: dict = {}
    if current is None:
        segments = {
            namespace: {
                segment_id: (
                    _segment_entry('exited', as_of)
                    if status in MEMBER_STATUSES
                    else _segment_entry(status, qualified)
                )
                for segment_id, (status, qualified) in entries.items()
            }
            for namespace, entries in previous.segments.items()
        }
        identities = previous.identities
    else:
        for path, value in current.attributes.items():
            _put(record, path.split('.'), value)
        segments = {
            namespace: {
                segment_id: _segment_entry(status, qualified)
                for segment_id, (status, qualified) in entries.items()
            }
            for namespace, entries in current.segments.items()
        }
        if previous is not None:
            for namespace, segment_id, entry in MappedSegments.of(mapped).entries(previous):
                if entry[0] in MEMBER_STATUSES and segment_id not in current.segments.get(
                    namespace, {}
                ):
                    segments.setdefault(namespace, {})[segment_id] = _segment_entry('exited', as_of)
        identities = current.identities
    if segment_scope == 'mapped':
        segments = _only_mapped(segments, mapped)
    if segment_fields:
        for namespace, entries in segments.items():
            for segment_id, entry in entries.items():
                fields = segment_fields.get((namespace, segment_id))
                if fields:
                    entry.update(fields)
    record['segmentMembership'] = segments
    record['identityMap'] = {
        namespace: [{'id': identity} for identity in ids] for namespace, ids in identities.items()
    }
    return record


def _only_mapped(segments: dict, mapped) -> dict:
    """The entries of mapped segments only; a namespace left with none is left out."""
    kept: dict = {}
    view = ProfileView('', segments, {}, {})
    for namespace, segment_id, entry in MappedSegments.of(mapped).entries(view):
        kept.setdefault(namespace, {})[segment_id] = entry
    return kept


def _put(record: dict, path: list[str], value) -> None:
    for part in path[:-1]:
        record = record.setdefault(part, {})
    record[path[-1]] = value


def encode_record(record: dict) -> bytes:
    """The record's bytes: sorted keys, compact separators, UTF-8, no trailing newline."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # orjson refuses integers beyond 64 bits; the standard library writes them alike.
        return json.dumps(
            record, sort_keys=True, separators=(',', ':'), ensure_ascii=False, allow_nan=False
        ).encode('utf-8')


class _FormatExportFn(beam.DoFn):
    def __init__(self, mapped, as_of: str, segment_fields=None, segment_scope: str = 'all'):
        self._mapped = mapped
        self._as_of = as_of
        self._segment_fields = segment_fields
        self._segment_scope = segment_scope
        self._exported = {
            reason: Metrics.counter('beam_kinesis', counts.exported(reason)) for reason in REASONS
        }

    def process(self, element):
        key, change = element
        try:
            record = to_export_record(
                change,
                self._mapped,
                self._as_of,
                segment_fields=self._segment_fields,
                segment_scope=self._segment_scope,
            )
            data = encode_record(record)
        except (TypeError, ValueError) as err:
            source = (change.current or change.previous).source
            yield (
                DEAD_LETTER,
                dead_letter(
                    STAGE_FORMAT,
                    f'the export record cannot be written as JSON: {err}',
                    source,
                    repr(change),
                ),
            )
            return
        self._exported[change.reason].inc()
        yield 'exported', change.reason
        yield 'records', (key, data)
        yield 'identities', sum(len(ids) for ids in record['identityMap'].values())


@beam.typehints.with_input_types(ProfileChange)
class FormatExport(beam.PTransform):
    """`(profile_key, Change)` -> `(profile_key, record_bytes)`, as the destination sends them.

    Output: `records`, `dead_letters`, and `stats`: `Counts` of the records made per reason
    (`counts.exported`; a change whose record cannot be made is a `format` dead letter
    instead) and of the ids of the records' identityMaps (`counts.IDENTITIES_EXPORTED`).
    """

    def __init__(
        self, mapped_segments, as_of: str, *, segment_fields=None, segment_scope: str = 'all'
    ):
        """
        Args:
          mapped_segments: the destination's mapped `(namespace, segment_id)` pairs, or a
            `DestinationConfig` (its segments mapped in the run, audience metadata and
            segment scope, SPEC 7: pass `config.for_run(...)`).
          as_of: the time stamped on synthesised `exited` entries, `YYYY-MM-DDTHH:MM:SSZ`.
          segment_fields: audience metadata by `(namespace, segment_id)`, added to entries.
          segment_scope: `all` or `mapped`.
        """
        super().__init__()
        if isinstance(mapped_segments, DestinationConfig):
            segment_fields = mapped_segments.segment_fields()
            segment_scope = mapped_segments.segment_scope
            mapped_segments = mapped_segments.segments
        if segment_scope not in SEGMENT_SCOPES:
            raise ValueError(f'segment_scope {segment_scope!r} is not one of {SEGMENT_SCOPES}')
        # Indexed once: a record then costs what its own segments number, not the mapped ones.
        self._mapped = MappedSegments(mapped_segments)
        self._as_of = as_of
        self._segment_fields = dict(segment_fields or {})
        self._segment_scope = segment_scope

    def expand(self, changes):
        outputs = split_tagged(
            changes
            | 'Format'
            >> beam.ParDo(
                _FormatExportFn(
                    self._mapped, self._as_of, self._segment_fields, self._segment_scope
                )
            ),
            ('records', DEAD_LETTER, 'exported', 'identities'),
            'Format',
            {'records': KinesisRecord, DEAD_LETTER: DeadLetter},
        )
        reasons = (
            outputs.pop('exported')
            | 'CountByReason' >> beam.combiners.Count.PerElement()
            | 'AsStats' >> beam.Map(_exported_stats).with_output_types(Stats)
        )
        identities = (
            outputs.pop('identities')
            | 'SumIdentities' >> beam.CombineGlobally(sum).without_defaults()
            | 'IdentityStats' >> beam.Map(_identity_stats).with_output_types(Stats)
        )
        outputs['stats'] = (reasons, identities) | 'FormatStats' >> beam.Flatten()
        return outputs


def _exported_stats(counted) -> Counts:
    reason, count = counted
    return Counts({counts.exported(reason): count})


def _identity_stats(count: int) -> Counts:
    return Counts({counts.IDENTITIES_EXPORTED: count})
