"""Detect changes: join previous and current by profile key and decide what to export."""

from __future__ import annotations

import datetime
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_kinesis.config import DestinationConfig
from beam_kinesis.deadletter import DEAD_LETTER, STAGE_JOIN, STAGE_VALIDATE, dead_letter
from beam_kinesis.profile import (
    MEMBER_STATUSES,
    InvalidProfile,
    ProfileView,
    fields_needed,
    project_profile,
)

__all__ = ['Change', 'DetectChanges', 'REASONS', 'classify_change', 'segment_changed',
           'same_value', 'ON_DELETE_POLICIES']

# Why a profile is exported, in the order a profile's reason is chosen.
REASON_DELETION = 'deletion'
REASON_FIRST_RUN = 'first_run'
REASON_SEGMENT = 'segment_change'
REASON_IDENTITY = 'identity_change'
REASON_ATTRIBUTE = 'attribute_change'
REASONS = (REASON_SEGMENT, REASON_IDENTITY, REASON_ATTRIBUTE, REASON_DELETION,
           REASON_FIRST_RUN)

ON_DELETE_POLICIES = ('exit', 'ignore')

_EMPTY = ProfileView('', {}, {}, {})
# lastQualificationTime as profile stores write it; such strings order as the times do.
_CANONICAL_TIME_LENGTH = len('2022-01-11T21:24:39Z')


class Change(NamedTuple):
    """A profile to export: why, and its previous and current views (either may be None)."""
    reason: str
    previous: ProfileView | None
    current: ProfileView | None


def _parse_time(text: str) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def _later(current: str | None, previous: str | None) -> bool:
    if not current or not previous:
        return False  # without both times there is no re-qualification to see
    if (len(current) == len(previous) == _CANONICAL_TIME_LENGTH
            and current.endswith('Z') and previous.endswith('Z')):
        return current > previous
    try:
        return _parse_time(current) > _parse_time(previous)
    except ValueError as err:
        raise InvalidProfile(f'lastQualificationTime {current!r} or {previous!r} is not an '
                             'ISO-8601 time') from err


def segment_changed(previous: tuple | None, current: tuple | None) -> bool:
    """Whether one mapped segment changed state, given `(status, lastQualificationTime)`
    entries (None where the profile is not in the segment at all).

    Entered (not a member, then a member), exited (a member, then `exited` or gone), and
    re-qualified (`realized` with a later time) are changes; `realized` -> `existing` is not.
    """
    was_member = previous is not None and previous[0] in MEMBER_STATUSES
    is_member = current is not None and current[0] in MEMBER_STATUSES
    if was_member != is_member:
        return True
    return (is_member and current[0] == 'realized' and previous is not None
            and _later(current[1], previous[1]))


def same_value(left, right) -> bool:
    """Equality of JSON values in which `true` is not `1` (Python says it is)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict):
        return (isinstance(right, dict) and left.keys() == right.keys()
                and all(same_value(left[key], right[key]) for key in left))
    if isinstance(left, list):
        return (isinstance(right, list) and len(left) == len(right)
                and all(same_value(a, b) for a, b in zip(left, right, strict=True)))
    return left == right


def _is_member(view: ProfileView, mapped) -> bool:
    return any(view.segments.get(namespace, {}).get(segment_id, ('',))[0] in MEMBER_STATUSES
               for namespace, segment_id in mapped)


def _identity_pairs(view: ProfileView) -> frozenset:
    return frozenset((namespace, identity)
                     for namespace, ids in view.identities.items() for identity in ids)


def classify_change(previous: ProfileView | None, current: ProfileView | None, mapped,
                    *, first_run: bool = False, on_delete: str = 'exit') -> str | None:
    """Decides whether a profile is exported, and why (SPEC section 3).

    Args:
      previous: the profile in the previous snapshot, None if absent there.
      current: the profile in the current snapshot, None if absent (deleted).
      mapped: the mapped segments as `(namespace, segment_id)` pairs.
      first_run: there is no previous snapshot at all.
      on_delete: `exit` exports a deleted member once with its memberships exited;
        `ignore` exports nothing for it.

    Returns:
      One of `REASONS`, or None when the profile is not exported.

    Raises:
      InvalidProfile: a lastQualificationTime that is not a time had to be compared.
    """
    if current is None:
        if previous is not None and on_delete == 'exit' and _is_member(previous, mapped):
            return REASON_DELETION
        return None
    if first_run:
        return REASON_FIRST_RUN if _is_member(current, mapped) else None
    previous = previous or _EMPTY
    for namespace, segment_id in mapped:
        if segment_changed(previous.segments.get(namespace, {}).get(segment_id),
                           current.segments.get(namespace, {}).get(segment_id)):
            return REASON_SEGMENT
    if not _is_member(current, mapped):
        return None
    if _identity_pairs(previous) != _identity_pairs(current):
        return REASON_IDENTITY
    if not same_value(previous.attributes, current.attributes):
        return REASON_ATTRIBUTE
    return None


class _KeyProfileFn(beam.DoFn):
    """SnapshotRecord -> (profile key, ProfileView); invalid profiles to dead letters."""

    def __init__(self, key_path: tuple[str, ...], attribute_paths, label: str):
        self._key_path = key_path
        self._attribute_paths = attribute_paths
        self._invalid = Metrics.counter('beam_kinesis', f'{label}_profiles_invalid')

    def process(self, record):
        try:
            yield project_profile(record.profile, record.source, self._key_path,
                                  self._attribute_paths)
        except InvalidProfile as err:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, dead_letter(STAGE_VALIDATE, str(err), record.source,
                                         record.profile))


class _ClassifyFn(beam.DoFn):
    """(key, {'previous': [...], 'current': [...]}) -> (key, Change) for exported profiles."""

    def __init__(self, mapped, first_run: bool, on_delete: str):
        self._mapped = mapped
        self._first_run = first_run
        self._on_delete = on_delete
        self._profiles = Metrics.counter('beam_kinesis', 'profiles_compared')
        self._duplicates = Metrics.counter('beam_kinesis', 'profiles_with_duplicate_keys')

    def process(self, joined):
        key, sides = joined
        previous = list(sides.get('previous', ()))
        current = list(sides.get('current', ()))
        self._profiles.inc()
        duplicated = [(name, views) for name, views in (('previous', previous),
                                                        ('current', current))
                      if len(views) > 1]
        if duplicated:
            self._duplicates.inc()
            for name, views in duplicated:
                sources = ', '.join(sorted((view.source for view in views),
                                          key=_source_order))
                for view in views:
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                        STAGE_JOIN,
                        f'profile key {key!r} occurs {len(views)} times in the {name} '
                        f'snapshot ({sources}); the profile is not exported in this run',
                        view.source, _view_record(key, view)))
            return
        before = previous[0] if previous else None
        after = current[0] if current else None
        try:
            reason = classify_change(before, after, self._mapped, first_run=self._first_run,
                                     on_delete=self._on_delete)
        except InvalidProfile as err:
            where = (after or before).source
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                STAGE_VALIDATE, str(err), where, _view_record(key, after or before)))
            return
        if reason is not None:
            yield key, Change(reason, before, after)


def _source_order(source: str) -> tuple:
    path, _, position = source.rpartition(':')
    return (path, int(position)) if position.isdigit() else (source, 0)


def _view_record(key: str, view: ProfileView) -> dict:
    """What a dead letter shows of a keyed profile: the parts that were kept of it."""
    return {'key': key, 'segments': {ns: {sid: list(entry) for sid, entry in entries.items()}
                                     for ns, entries in view.segments.items()},
            'identities': {ns: list(ids) for ns, ids in view.identities.items()},
            'attributes': view.attributes}


class DetectChanges(beam.PTransform):
    """Keys both snapshots by profile key, joins them and keeps the profiles to export.

    Input: a dict `{'previous': records, 'current': records}` of `SnapshotRecord`
    PCollections (as `ReadSnapshot` gives); leave out `previous` for a first run.
    Output: a dict with `changes`, `(profile_key, Change)` pairs, and `dead_letters`.

    Example:
        changes = ({'previous': old.records, 'current': new.records}
                   | DetectChanges(config))['changes']
    """

    def __init__(self, config: DestinationConfig, key_field: str = '_id',
                 on_delete: str = 'exit'):
        super().__init__()
        if on_delete not in ON_DELETE_POLICIES:
            raise ValueError(f'on_delete {on_delete!r} is not one of {ON_DELETE_POLICIES}')
        if not key_field or any(not part for part in key_field.split('.')):
            raise ValueError(f'key_field {key_field!r} is not a dotted path')
        self._config = config
        self._key_path = tuple(key_field.split('.'))
        self._on_delete = on_delete

    @property
    def fields(self) -> tuple[str, ...]:
        """The top-level profile fields this transform reads (pass to `ReadSnapshot`)."""
        return fields_needed(self._key_path, self._config.attribute_paths)

    def expand(self, snapshots):
        unknown = set(snapshots) - {'previous', 'current'}
        if unknown or 'current' not in snapshots:
            raise ValueError('DetectChanges takes {"previous": ..., "current": ...} '
                             f'(previous optional), not {sorted(snapshots)}')
        keyed, dead = {}, []
        for name, records in snapshots.items():
            result = records | f'Key{name.title()}' >> beam.ParDo(_KeyProfileFn(
                self._key_path, self._config.attribute_paths, name)).with_outputs(
                    DEAD_LETTER, main='keyed')
            keyed[name] = result.keyed
            dead.append(result[DEAD_LETTER])
        first_run = 'previous' not in snapshots
        classified = (
            keyed
            | 'JoinByKey' >> beam.CoGroupByKey()
            | 'Classify' >> beam.ParDo(_ClassifyFn(self._config.segments, first_run,
                                                   self._on_delete)).with_outputs(
                DEAD_LETTER, main='changes'))
        dead.append(classified[DEAD_LETTER])
        return {'changes': classified.changes,
                'dead_letters': dead | 'FlattenDeadLetters' >> beam.Flatten()}
