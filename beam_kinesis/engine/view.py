"""What the destination looks at: each profile validated and reduced to its key and view.

This module is the one definition of it. Every input format and every engine reaches a
`ProfileView` through `ProfileProjection.project`, and a view travels between steps only as
`encode_view` writes it; nothing else restates which parts of a profile matter.
"""

from __future__ import annotations

import datetime
import json
import zlib
from typing import Any, NamedTuple

import orjson

from beam_kinesis.values import may_hold_big_integers, normalize_value

__all__ = [
    'DEFAULT_BUCKETS',
    'InvalidProfile',
    'MEMBER_STATUSES',
    'ProfileProjection',
    'ProfileView',
    'STATUSES',
    'decode_view',
    'dumps',
    'encode_view',
    'fields_needed',
    'loads',
    'project_profile',
    'value_at',
]

# Segment membership statuses a profile store writes.
STATUSES = frozenset({'realized', 'existing', 'exited'})
# The statuses that make a profile a member of a segment.
MEMBER_STATUSES = frozenset({'realized', 'existing'})


class InvalidProfile(ValueError):
    """A profile that was read but cannot be used (no key, bad status, wrong type)."""


class ProfileView(NamedTuple):
    """The parts of a profile the destination looks at; all else is dropped at the read.

    Attributes:
      source: where the profile was read, `path:position`.
      segments: `{namespace: {segment_id: (status, lastQualificationTime or None)}}`.
      identities: `{namespace: (id, ...)}` in the order of the profile's identity map.
      attributes: `{dotted_path: value}` for the mapped attributes the profile has.
    """

    source: str
    segments: dict
    identities: dict
    attributes: dict


_MISSING = object()


def value_at(document: dict, path: tuple[str, ...], label: str) -> Any:
    """The value at a path of keys; `_MISSING` when a step is absent or null.

    Raises:
      InvalidProfile: a step on the way is neither an object nor absent.
    """
    value: Any = document
    for part in path:
        if type(value) is not dict and not isinstance(value, dict):
            _not_an_object(document, path, label)
        value = value.get(part)
        if value is None:
            return _MISSING
    return value


def _not_an_object(document: dict, path: tuple[str, ...], label: str) -> None:
    value: Any = document
    for depth, part in enumerate(path):
        if not isinstance(value, dict):
            where = '.'.join(path[:depth]) or 'the profile'
            raise InvalidProfile(
                f'{label}: expected an object at {where!r}, found {type(value).__name__}'
            )
        value = value.get(part)


def _json_value(value: Any, label: str) -> Any:
    """A value in its JSON form (see `normalize_value`): profiles from a projecting read are
    normalised here, only in the parts that are kept."""
    if value is _MISSING or isinstance(value, str):
        return value
    try:
        return normalize_value(value)
    except ValueError as err:
        raise InvalidProfile(f'{label}: {err}') from err


def fields_needed(key_path: tuple[str, ...], attribute_paths) -> tuple[str, ...]:
    """The top-level fields a diff needs: the key's, the two maps, the mapped attributes'."""
    roots = {key_path[0], 'segmentMembership', 'identityMap'}
    roots.update(path[0] for path in attribute_paths)
    return tuple(sorted(roots))


def _profile_key(profile: dict, key_path: tuple[str, ...]) -> str:
    key = _json_value(value_at(profile, key_path, 'profile key'), 'the profile key')
    if key is _MISSING:
        raise InvalidProfile(f'the profile has no key at {".".join(key_path)!r}')
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise InvalidProfile(
            f'the profile key at {".".join(key_path)!r} is a {type(key).__name__}, not a string'
        )
    key = str(key)
    if not key.strip():
        raise InvalidProfile(f'the profile key at {".".join(key_path)!r} is empty')
    return key


def _segments(profile: dict) -> dict:
    membership = profile.get('segmentMembership')
    if membership is None:
        return {}
    if type(membership) is not dict:
        raise InvalidProfile(
            f'segmentMembership is a {type(membership).__name__}, not an object of namespaces'
        )
    segments = {}
    for namespace, entries in membership.items():
        if entries is None:  # a null is an absence, as everywhere else
            continue
        if type(entries) is not dict:
            raise InvalidProfile(
                f'segmentMembership.{namespace} is a '
                f'{type(entries).__name__}, not an object of segments'
            )
        try:
            # The common case in one pass: every entry an object with a valid status and a
            # string time (or none); anything else is looked at closely below.
            view = {
                segment_id: (entry['status'], entry.get('lastQualificationTime'))
                for segment_id, entry in entries.items()
                if entry is not None
            }
            valid = all(
                status in STATUSES
                and (qualified is None or (type(qualified) is str and _is_time(qualified)))
                for status, qualified in view.values()
            )
        except (KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            view = {
                segment_id: _segment(namespace, segment_id, entry)
                for segment_id, entry in entries.items()
                if entry is not None
            }
        segments[namespace] = view
    return segments


def _segment(namespace: str, segment_id: str, entry) -> tuple:
    """One segment entry, validated, as `(status, lastQualificationTime or None)`."""
    if not isinstance(entry, dict):
        raise InvalidProfile(
            f'segment {namespace}:{segment_id} is a {type(entry).__name__}, not an object'
        )
    status = entry.get('status')
    if not isinstance(status, str) or status not in STATUSES:  # a list is unhashable
        raise InvalidProfile(
            f'segment {namespace}:{segment_id} has status {status!r};'
            f' expected one of {sorted(STATUSES)}'
        )
    qualified = entry.get('lastQualificationTime')
    if qualified is not None and not isinstance(qualified, str):
        qualified = _json_value(qualified, f'segment {namespace}:{segment_id}')
    if qualified is not None and not isinstance(qualified, str):
        raise InvalidProfile(
            f'segment {namespace}:{segment_id} has a lastQualificationTime that is not a string'
        )
    if qualified is not None and not _is_time(qualified):
        raise InvalidProfile(
            f'segment {namespace}:{segment_id} has lastQualificationTime '
            f'{qualified!r}, which is not an ISO-8601 time'
        )
    return status, qualified


def _is_time(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _identities(profile: dict) -> dict:
    identity_map = profile.get('identityMap')
    if identity_map is None:
        return {}
    if not isinstance(identity_map, dict):
        raise InvalidProfile(
            f'identityMap is a {type(identity_map).__name__}, not an object of namespaces'
        )
    identities = {}
    for namespace, entries in identity_map.items():
        if entries is None:  # a null is an absence, as everywhere else
            continue
        if not isinstance(entries, list):
            raise InvalidProfile(
                f'identityMap.{namespace} is a {type(entries).__name__}, not a list of identities'
            )
        ids = []
        for entry in entries:
            if not isinstance(entry, dict) or 'id' not in entry:
                raise InvalidProfile(f'identityMap.{namespace} holds an entry without an "id"')
            identity = entry['id']
            if not isinstance(identity, str):
                identity = _json_value(identity, f'identityMap.{namespace}')
            if isinstance(identity, bool) or not isinstance(identity, (str, int)):
                raise InvalidProfile(
                    f'identityMap.{namespace} holds an id that is a '
                    f'{type(identity).__name__}, not a string'
                )
            ids.append(identity)
        identities[namespace] = tuple(ids)
    return identities


def project_profile(
    profile: dict,
    source: str,
    key_path: tuple[str, ...],
    attribute_paths: tuple[tuple[str, ...], ...],
) -> tuple[str, ProfileView]:
    """Validates a normalised profile and reduces it to its key and `ProfileView`.

    Raises:
      InvalidProfile: no usable key, a status outside `STATUSES`, or a wrong type where an
        object or list is expected.
    """
    return _project(profile, source, key_path, _attribute_specs(attribute_paths))


def _attribute_specs(attribute_paths) -> tuple[tuple[tuple[str, ...], str, str], ...]:
    """`(path, dotted path, error label)` of each mapped attribute, made once."""
    return tuple(
        (tuple(path), '.'.join(path), f'mapped attribute {".".join(path)}')
        for path in attribute_paths
    )


def _project(
    profile: dict, source: str, key_path: tuple[str, ...], attribute_specs
) -> tuple[str, ProfileView]:
    key = _profile_key(profile, key_path)
    attributes = {}
    for path, dotted, label in attribute_specs:
        value = value_at(profile, path, label)
        if value is not _MISSING:
            attributes[dotted] = _json_value(value, label)
    return key, ProfileView(source, _segments(profile), _identities(profile), attributes)


# Profiles are joined in buckets of their key's hash (see `ProfileProjection.bucket`).
DEFAULT_BUCKETS = 1024


def dumps(document) -> bytes:
    """Compact JSON bytes; integers beyond 64 bits and non-string keys via the standard library."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document, separators=(',', ':'), ensure_ascii=False).encode('utf-8')


def loads(data: bytes):
    """Parses what `dumps` wrote (integers beyond 64 bits exactly)."""
    if may_hold_big_integers(data):
        return json.loads(data)
    return orjson.loads(data)


def encode_view(view: ProfileView) -> bytes:
    """A view's parts (all but its source) as compact JSON; `decode_view` reads it back.

    Equal views of one path encode to equal bytes, so two encodings that are equal are of
    equal views (the converse need not hold: the engine then compares the views).
    """
    return dumps((view.segments, view.identities, view.attributes))


def decode_view(data: bytes, source: str) -> ProfileView:
    """The view `encode_view` wrote, with its source; entries as tuples, as `project` makes
    them."""
    segments, identities, attributes = loads(data)
    return ProfileView(
        source,
        {
            namespace: {segment_id: tuple(entry) for segment_id, entry in entries.items()}
            for namespace, entries in segments.items()
        },
        {namespace: tuple(ids) for namespace, ids in identities.items()},
        attributes,
    )


class ProfileProjection:
    """Keys profiles, keeps what the destination looks at, and says which bucket they join in.

    Picklable; built once when the pipeline is, used in the read's DoFn on every worker.
    """

    def __init__(self, key_path: tuple[str, ...], attribute_paths, buckets: int = DEFAULT_BUCKETS):
        """
        Args:
          key_path: the profile key's path.
          attribute_paths: the mapped attributes' paths.
          buckets: how many buckets profiles are joined in.
        """
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f'buckets {buckets!r} must be a positive integer')
        self.key_path = tuple(key_path)
        self.attribute_paths = tuple(tuple(path) for path in attribute_paths)
        self.buckets = buckets
        self._attribute_specs = _attribute_specs(self.attribute_paths)

    @property
    def fields(self) -> tuple[str, ...]:
        """The top-level fields a profile needs for this projection."""
        return fields_needed(self.key_path, self.attribute_paths)

    def project(self, profile: dict, source: str) -> tuple[str, ProfileView]:
        """`project_profile` with this projection's key and attributes."""
        return _project(profile, source, self.key_path, self._attribute_specs)

    def key_of(self, profile: dict) -> str | None:
        """The profile's key, or None when it has no usable one."""
        try:
            return _profile_key(profile, self.key_path)
        except InvalidProfile:
            return None

    def bucket(self, key: str) -> int:
        """A stable bucket for a key (the same on every worker, run and Python version)."""
        return zlib.crc32(key.encode('utf-8', 'surrogatepass')) % self.buckets
