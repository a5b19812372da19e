"""Detect changes: join previous and current by profile key and decide what to export."""

from __future__ import annotations

import bisect
import collections
import datetime
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_kinesis.batches import BucketRows, decode_batch, view_parts
from beam_kinesis.config import DestinationConfig
from beam_kinesis.deadletter import DEAD_LETTER, STAGE_JOIN, STAGE_VALIDATE, dead_letter
from beam_kinesis.profile import (
    DEFAULT_BUCKETS,
    MEMBER_STATUSES,
    InvalidProfile,
    ProfileProjection,
    ProfileView,
    dumps,
    loads,
)
from beam_kinesis.snapshot import SnapshotChangedError, SnapshotRecord, read_views
from beam_kinesis.tagged import Outputs, split_tagged

__all__ = ['Change', 'DetectChanges', 'REASONS', 'classify_change', 'segment_changed',
           'same_value', 'ON_DELETE_POLICIES']

# Why a profile is exported, in the order a profile's reason is chosen.
REASON_DELETION = 'deletion'
REASON_FIRST_RUN = 'first_run'
REASON_SEGMENT = 'segment_change'
REASON_IDENTITY = 'identity_change'
REASON_ATTRIBUTE = 'attribute_change'
REASON_NEWLY_MAPPED = 'newly_mapped'
REASONS = (REASON_SEGMENT, REASON_NEWLY_MAPPED, REASON_IDENTITY, REASON_ATTRIBUTE,
           REASON_DELETION, REASON_FIRST_RUN)

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
            and current[10] == previous[10] == 'T'
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
                    *, first_run: bool = False, on_delete: str = 'exit',
                    newly_mapped=()) -> str | None:
    """Decides whether a profile is exported, and why (SPEC section 3).

    Args:
      previous: the profile in the previous snapshot, None if absent there.
      current: the profile in the current snapshot, None if absent (deleted).
      mapped: the mapped segments as `(namespace, segment_id)` pairs.
      first_run: there is no previous snapshot at all.
      on_delete: `exit` exports a deleted member once with its memberships exited;
        `ignore` exports nothing for it.
      newly_mapped: the mapped segments first mapped in this run (SPEC 8). A current
        member of one is exported as `newly_mapped` unless a segment mapped before this run
        changed state (`segment_change` first); a change of the newly mapped segment itself
        counts as `segment_change` only for a profile that is not a member of it in C.

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
        if ((namespace, segment_id) not in newly_mapped
                and segment_changed(previous.segments.get(namespace, {}).get(segment_id),
                                    current.segments.get(namespace, {}).get(segment_id))):
            return REASON_SEGMENT
    if newly_mapped and _is_member(current, newly_mapped):
        return REASON_NEWLY_MAPPED
    for namespace, segment_id in newly_mapped:
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


class _ToBatchFn(beam.DoFn):
    """SnapshotRecords -> `(bucket, batch)` of one profile (carrying its view: there is no
    file to read it from again), invalid ones to dead letters; batches a projecting
    `ReadSnapshot` already made pass through."""

    def __init__(self, projection: ProfileProjection, label: str):
        self._projection = projection
        self._label = label
        self._invalid = Metrics.counter('beam_kinesis', f'{label}_profiles_invalid')

    def process(self, element):
        if not isinstance(element, SnapshotRecord):
            yield 'batches', element
            return
        path, _, position = element.source.rpartition(':')
        if not position.isdigit():
            path, position = element.source, None
        position = int(position) if position else None
        rows = BucketRows(self._projection, path, None)
        try:
            key, view = self._projection.project(element.profile, element.source)
            digest = self._projection.fingerprint(element.profile, view)[1]
        except InvalidProfile as err:
            self._invalid.inc()
            yield DEAD_LETTER, dead_letter(STAGE_VALIDATE, str(err), element.source,
                                           element.profile)
            key = self._projection.key_of(element.profile)
            if key is None:
                yield 'stats', {'snapshot': self._label, 'unkeyed': 1}
                return
            view = digest = None  # a tombstone
        rows.add(key, position, digest, view)
        for batch in rows.flush():
            yield 'batches', batch


# How a case of the comparison refers to one row of a profile: `[source, state, parts]`,
# state one of these; parts are the view's parts when the batch carried them.
_TOMBSTONE, _CARRIED, _FETCHED = 'tombstone', 'carried', 'fetched'


class _Side:
    """One snapshot's rows of a bucket: keys and digests, indexed by key."""

    def __init__(self, name: str, batches):
        self.name = name
        self._batches = [decode_batch(data) for data in batches]
        self._starts = []
        self.keys: list = []
        self.digests: list = []
        for batch in self._batches:
            self._starts.append(len(self.keys))
            self.keys.extend(batch.keys)
            self.digests.extend(batch.digests)
        self.index = dict(zip(self.keys, range(len(self.keys))))
        # Keys with more than one row: {key: [row, ...]}; the index holds their last row.
        self.duplicated: dict = {}
        if len(self.index) < len(self.keys):
            counts = collections.Counter(self.keys)
            for row, key in enumerate(self.keys):
                if counts[key] > 1:
                    self.duplicated.setdefault(key, []).append(row)

    def rows_of(self, key: str) -> list:
        """Every row of a key."""
        if key in self.duplicated:
            return self.duplicated[key]
        row = self.index.get(key)
        return [] if row is None else [row]

    def is_tombstone(self, row: int) -> bool:
        return self.digests[row] is None

    def reference(self, row: int, key: str, requests: dict) -> list:
        """How a case refers to a row; a row to read again is added to `requests`,
        `{path: (format, [[position, key, side, digest], ...])}`."""
        index = bisect.bisect_right(self._starts, row) - 1
        batch, local = self._batches[index], row - self._starts[index]
        source = batch.source(local)
        if self.digests[row] is None:
            return [source, _TOMBSTONE, None]
        if batch.views is not None:
            return [source, _CARRIED, batch.views[local]]
        requests.setdefault(batch.path, (batch.format, []))[1].append(
            [batch.positions[local], key, self.name, self.digests[row]])
        return [source, _FETCHED, None]


class _CompareBucketFn(beam.DoFn):
    """One bucket's `{'previous': [batch...], 'current': [batch...]}` -> the profiles that
    need a closer look (`cases`), the rows of them to read again (`requests`, by file) and
    the bucket's stats. Profiles whose digests are equal are done with here."""

    def __init__(self, newly_mapped: bool = False):
        # An unchanged member of a newly mapped segment is exported too: no digest shortcut.
        self._newly_mapped = newly_mapped
        self._profiles = Metrics.counter('beam_kinesis', 'profiles_compared')
        self._duplicates = Metrics.counter('beam_kinesis', 'profiles_with_duplicate_keys')

    def process(self, element):
        bucket, sides = element
        previous = _Side('previous', sides.get('previous', ()))
        current = _Side('current', sides.get('current', ()))
        stats = collections.Counter(rows_previous=len(previous.keys),
                                    rows_current=len(current.keys))
        duplicated = previous.duplicated.keys() | current.duplicated.keys()
        # The common case first, on digests alone: a profile in both snapshots, once each,
        # with nothing the destination looks at changed.
        before_index, before_digests = previous.index, previous.digests
        after_index, after_digests = current.index, current.digests
        candidates = []
        for key, after in after_index.items():
            before = before_index.get(key)
            digest = after_digests[after]
            if (before is None or digest is None or digest != before_digests[before]
                    or key in duplicated or self._newly_mapped):
                candidates.append(key)
        unchanged = len(after_index) - len(candidates)
        candidates.extend(key for key in before_index if key not in after_index)
        stats['profiles_compared'] = unchanged + len(candidates)
        cases, requests = [], {}
        for key in candidates:
            if key in duplicated:
                stats['profiles_with_duplicate_keys'] += 1
                cases.append([key, *([side.reference(row, key, requests)
                                      for row in side.rows_of(key)]
                                     if key in side.duplicated else []
                                     for side in (previous, current))])
                continue
            rows = [side.index.get(key) for side in (previous, current)]
            if any(row is not None and side.is_tombstone(row)
                   for row, side in zip(rows, (previous, current))):
                stats['profiles_invalid'] += 1  # dead-lettered at the read; not exported
                continue
            cases.append([key, *([] if row is None else [side.reference(row, key, requests)]
                                 for row, side in zip(rows, (previous, current)))])
        stats['cases'] = len(cases)  # the input ledger checks they are all classified
        if cases:
            yield 'cases', (bucket, dumps(cases))
        for path, (fmt, wanted) in requests.items():
            yield 'requests', (path, (fmt, bucket, dumps(wanted)))
        self._profiles.inc(stats['profiles_compared'])
        self._duplicates.inc(stats['profiles_with_duplicate_keys'])
        yield 'stats', dict(stats)


class _FetchViewsFn(beam.DoFn):
    """`(path, requests)` -> `(bucket, views)`: reads the rows the comparison asked for
    again, each file once, and checks each is what the first read saw."""

    def __init__(self, projection: ProfileProjection):
        self._projection = projection

    def process(self, element):
        path, requests = element
        wanted: dict[int, list] = {}
        formats = set()
        for fmt, bucket, data in requests:
            formats.add(fmt)
            for position, key, side, digest in loads(data):
                wanted.setdefault(position, []).append((bucket, key, side, digest))
        (fmt,) = formats  # a file is read in one format
        views: dict[int, list] = {}
        for position, key, digest, view in read_views(path, fmt, self._projection,
                                                      frozenset(wanted)):
            for bucket, wanted_key, side, wanted_digest in wanted.pop(position, ()):
                if (key, digest) != (wanted_key, wanted_digest):
                    raise SnapshotChangedError(
                        f'{path}:{position} holds another profile than it did when the job '
                        'read it; was the snapshot changed while the job ran?')
                views.setdefault(bucket, []).append([side, view.source, view_parts(view)])
        if wanted:
            raise SnapshotChangedError(
                f'{path} no longer holds {len(wanted)} profiles the job read from it (first '
                f'at position {min(wanted)}); was the snapshot changed while the job ran?')
        for bucket, found in views.items():
            yield bucket, dumps(found)


class _ClassifyBucketFn(beam.DoFn):
    """One bucket's `{'cases': [...], 'views': [...]}` -> `(key, Change)` for each profile
    to export, dead letters for duplicate keys and profiles that cannot be compared, and
    the bucket's stats."""

    def __init__(self, mapped, first_run: bool, on_delete: str, newly_mapped=()):
        self._mapped = mapped
        self._first_run = first_run
        self._on_delete = on_delete
        self._newly_mapped = tuple(newly_mapped)

    def process(self, element, unkeyed):
        _, groups = element
        fetched = {}
        for data in groups.get('views', ()):
            for side, source, parts in loads(data):
                fetched[side, source] = parts
        stats = collections.Counter()
        for data in groups.get('cases', ()):
            for key, before, after in loads(data):
                stats['cases_classified'] += 1
                views = ([_view(name, reference, fetched) for reference in references]
                         for name, references in (('previous', before), ('current', after)))
                before, after = views
                if len(before) > 1 or len(after) > 1:
                    yield from _duplicates_of(key, 'previous', before)
                    yield from _duplicates_of(key, 'current', after)
                    continue
                yield from self._classify(key, before[0] if before else None,
                                          after[0] if after else None, unkeyed, stats)
        yield 'stats', dict(stats)

    def _classify(self, key: str, previous_view, current_view, unkeyed: dict, stats):
        try:
            reason = classify_change(previous_view, current_view, self._mapped,
                                     first_run=self._first_run, on_delete=self._on_delete,
                                     newly_mapped=self._newly_mapped)
        except InvalidProfile as err:
            view = current_view or previous_view
            stats['profiles_invalid'] += 1
            yield DEAD_LETTER, dead_letter(STAGE_VALIDATE, str(err), view.source,
                                           _view_record(key, view))
            return
        if reason is None:
            return
        withheld = self._withheld(key, previous_view, current_view, unkeyed)
        if withheld is not None:
            stats['exports_withheld'] += 1
            yield DEAD_LETTER, withheld
            return
        stats[f'exported_{reason}'] += 1
        yield 'changes', (key, Change(reason, previous_view, current_view))

    def _withheld(self, key: str, before: ProfileView | None, after: ProfileView | None,
                  unkeyed: dict) -> dict | None:
        """A dead letter for an export that rests on the profile's absence from a snapshot
        that has records whose key could not be read (the profile may be one of them)."""
        for absent, present, name in ((after, before, 'current'), (before, after, 'previous')):
            if absent is None and not (name == 'previous' and self._first_run):
                count = unkeyed.get(name, 0)
                if count:
                    return dead_letter(
                        STAGE_JOIN,
                        f'profile key {key!r} is absent from the {name} snapshot, which has '
                        f'{count} records whose key could not be read; it may be one of them, '
                        'so its export is withheld', present.source, _view_record(key, present))
        return None


def _view(side: str, reference: list, fetched: dict) -> ProfileView | str:
    """The view a case's reference stands for; a tombstone's source for a tombstone."""
    source, state, parts = reference
    if state == _TOMBSTONE:
        return source
    if state == _FETCHED:
        parts = fetched.get((side, source))
        if parts is None:
            raise RuntimeError(f'{source} ({side}) was read again but did not reach the '
                               'classification: the runner lost data between the steps')
    return ProfileView(source, *parts)


def _duplicates_of(key: str, name: str, views: list):
    """Dead letters for the rows of a key that occurs more than once in a snapshot (views,
    or sources of rows already dead-lettered as invalid)."""
    if len(views) < 2:
        return
    sources = ', '.join(sorted((view if isinstance(view, str) else view.source
                                for view in views), key=_source_order))
    for view in views:
        if isinstance(view, str):
            continue  # already dead-lettered as invalid
        yield DEAD_LETTER, dead_letter(
            STAGE_JOIN,
            f'profile key {key!r} occurs {len(views)} times in the {name} snapshot '
            f'({sources}); the profile is not exported in this run',
            view.source, _view_record(key, view))


def _unkeyed_totals(stats) -> dict:
    """Records per snapshot whose key could not be read."""
    totals: dict = {}
    for entry in stats:
        if entry.get('unkeyed'):
            totals[entry['snapshot']] = totals.get(entry['snapshot'], 0) + entry['unkeyed']
    return totals


def _source_order(source: str) -> tuple:
    path, _, position = source.rpartition(':')
    return (path, int(position)) if position.isdigit() else (source, 0)


def _view_record(key: str, view: ProfileView) -> dict:
    """What a dead letter shows of a keyed profile: the parts that were kept of it."""
    return {'key': key, 'segments': view.segments, 'identities': view.identities,
            'attributes': view.attributes}


class DetectChanges(beam.PTransform):
    """Keys both snapshots by profile key, joins them and keeps the profiles to export.

    Input: a dict `{'previous': records, 'current': records}` where each is either a
    PCollection of `SnapshotRecord` or the `records` of a `ReadSnapshot` given
    `projection=this.projection` (faster: keyed and batched at the read); leave out
    `previous` for a first run.

    Output: `changes`, `(profile_key, Change)` pairs; `dead_letters`; `stats`, dicts of
    counts per bucket (`profiles_compared`, `exported_<reason>`, `rows_previous`, ...).

    The config's `segments` are the segments mapped in the run and its `newly_mapped` those
    first mapped in it (`DestinationConfig.for_run`); when some segment is newly mapped,
    every current profile is classified (an unchanged member of it is exported too).

    Profiles are joined in buckets of their key's hash, in two passes. The read sends only
    each profile's key, position and digest (see `batches`); `CoGroupByKey` of a bucket's
    batches and a comparison of digests drop the unchanged profiles, nine in ten of a daily
    diff. The rest are read again from their files (each file once, by the workers: the
    snapshot's paths must stay readable and unchanged while the job runs), joined with
    their cases by bucket, and classified.

    Example:
        detect = DetectChanges(config)
        old = p | 'Old' >> ReadSnapshot(old_glob, projection=detect.projection)
        new = p | 'New' >> ReadSnapshot(new_glob, projection=detect.projection)
        changes = {'previous': old.records, 'current': new.records} | detect
    """

    def __init__(self, config: DestinationConfig, key_field: str = '_id',
                 on_delete: str = 'exit', buckets: int = DEFAULT_BUCKETS):
        super().__init__()
        if on_delete not in ON_DELETE_POLICIES:
            raise ValueError(f'on_delete {on_delete!r} is not one of {ON_DELETE_POLICIES}')
        if not key_field or any(not part for part in key_field.split('.')):
            raise ValueError(f'key_field {key_field!r} is not a dotted path')
        self._config = config
        self._on_delete = on_delete
        self._projection = ProfileProjection(tuple(key_field.split('.')),
                                             config.attribute_paths, buckets,
                                             segments=config.segments)

    @property
    def projection(self) -> ProfileProjection:
        """How profiles are keyed, projected and batched (pass to `ReadSnapshot`)."""
        return self._projection

    @property
    def fields(self) -> tuple[str, ...]:
        """The top-level profile fields this transform reads (pass to `ReadSnapshot`)."""
        return self._projection.fields

    def expand(self, snapshots):
        names = {'previous', 'current'}
        unknown = set(snapshots) - names - {f'{name}_stats' for name in names}
        if unknown or 'current' not in snapshots:
            raise ValueError('DetectChanges takes {"previous": ..., "current": ...} '
                             '(previous optional; "previous_stats"/"current_stats" the '
                             f'ReadSnapshot stats), not {sorted(snapshots)}')
        batches, dead, read_stats = {}, [], []
        for name in ('previous', 'current'):
            if name not in snapshots:
                continue
            keyed = split_tagged(
                snapshots[name]
                | f'Key{name.title()}' >> beam.ParDo(_ToBatchFn(self._projection, name)),
                ('batches', DEAD_LETTER, 'stats'), f'Key{name.title()}')
            batches[name] = keyed.batches
            dead.append(keyed.dead_letters)
            read_stats.append(keyed.stats)
            if f'{name}_stats' in snapshots:
                read_stats.append(snapshots[f'{name}_stats'])
        # How many records of each snapshot had no readable key: an absence from a snapshot
        # with such records proves nothing (see _JoinBucketFn._withheld).
        unkeyed = (read_stats
                   | 'AllReadStats' >> beam.Flatten()
                   | 'UnkeyedRecords' >> beam.combiners.ToList().without_defaults()
                   | 'UnkeyedTotals' >> beam.Map(_unkeyed_totals))
        first_run = 'previous' not in snapshots
        compared = split_tagged(
            batches
            | 'JoinByKey' >> beam.CoGroupByKey()
            | 'Compare' >> beam.ParDo(_CompareBucketFn(bool(self._config.newly_mapped))),
            ('cases', 'requests', 'stats'), 'Compare')
        # The profiles that need a closer look, read again from their files, each file once.
        fetched = (compared.requests
                   | 'RequestsByFile' >> beam.GroupByKey()
                   | 'ReadAgain' >> beam.ParDo(_FetchViewsFn(self._projection)))
        classified = split_tagged(
            {'cases': compared.cases, 'views': fetched}
            | 'JoinViews' >> beam.CoGroupByKey()
            | 'Classify' >> beam.ParDo(
                _ClassifyBucketFn(self._config.segments, first_run, self._on_delete,
                                  self._config.newly_mapped),
                unkeyed=beam.pvalue.AsSingleton(unkeyed, default_value={})),
            ('changes', DEAD_LETTER, 'stats'), 'Classify')
        dead.append(classified.dead_letters)
        stats = ((compared.stats, classified.stats)
                 | 'FlattenStats' >> beam.Flatten())
        return Outputs(changes=classified.changes,
                       dead_letters=dead | 'FlattenDeadLetters' >> beam.Flatten(),
                       stats=stats)
