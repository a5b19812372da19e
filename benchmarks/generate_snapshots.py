"""Generates a realistic previous/current pair of profile snapshots, of any size, for benchmarks.

Usage:

    python benchmarks/generate_snapshots.py --profiles 1000000 --out benchmarks/data/1m \
        [--format jsonl|parquet|avro|all] [--files 4] [--change-rate 0.10] \
        [--delete-rate 0.01] [--new-rate 0.01] [--seed 42] [--segments 10] \
        [--memberships 6-14] [--unmapped-fields 0] [--jobs 2]

Writes OUT/previous/part-00000-of-0000K.<ext> ..., OUT/current/..., OUT/destination.yaml
(the destination the benchmark job maps) and OUT/manifest.json (what was generated, with
counts of each kind of change). Profile i is generated from its own RNG, seeded from the seed
and i, so both snapshots are streamed file by file without holding profiles in memory, files
can be written in parallel, and the same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import hashlib
import json
import os
import random
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Run from a checkout without installing the package.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from beam_kinesis.snapshot_files import write_snapshot  # noqa: E402

__all__ = [
    'GeneratorSettings',
    'current_profiles',
    'generate',
    'main',
    'parse_memberships',
    'previous_profiles',
]

_EXTENSIONS = {'jsonl': 'jsonl', 'parquet': 'parquet', 'avro': 'avro'}

# Mixed into per-profile seeds so that profile i of seed s and profile j of seed t differ.
_SEED_STRIDE = 1_000_003

# Snapshot as-of times: previous memberships qualified before the first, changes happen
# between the two.
_PREVIOUS_AS_OF = datetime.date(2024, 6, 1)
_HISTORY_START = datetime.date(2023, 1, 1)
_SECONDS_PER_DAY = 86_400

_MAPPED_ATTRIBUTES = (
    'person.name.firstName',
    'person.name.lastName',
    'person.birthDate',
    'personalEmail.address',
    'homeAddress.city',
)
_MAPPED_SEGMENT_COUNT = 5
# Segment memberships per profile, inclusive (capped by the pool): about 10 on average.
_DEFAULT_MEMBERSHIPS = (6, 14)

# Custom fields of the organisation's own field groups, as AEP puts them under the tenant
# namespace (`_<tenant>`): no destination here maps them, but every reader must get past
# them. They make long lines: about 22 bytes of JSON each.
_TENANT = '_acme'
_FIELDS_PER_GROUP = 10

_FIRST_NAMES = (
    'Olivia',
    'Liam',
    'Emma',
    'Noah',
    'Amelia',
    'Oliver',
    'Ava',
    'Elijah',
    'Sophia',
    'James',
    'Isabella',
    'William',
    'Mia',
    'Benjamin',
    'Charlotte',
    'Lucas',
    'Harper',
    'Henry',
    'Evelyn',
    'Theodore',
    'Zoë',
    'José',
    'Chloé',
    'Łukasz',
    'Søren',
    'Aïcha',
    'Mateo',
    'Yuki',
    'Priya',
    'Wei',
    'Fatima',
    'Mohammed',
    'Ingrid',
    'Björn',
    'Anaïs',
    'Diego',
    'Hana',
    'Kwame',
    'Nadia',
    'Rafael',
)
_LAST_NAMES = (
    'Smith',
    'Johnson',
    'Williams',
    'Brown',
    'Jones',
    'Garcia',
    'Miller',
    'Davis',
    'Rodriguez',
    'Martinez',
    'Hernández',
    'Lopez',
    'Gonzalez',
    'Wilson',
    'Anderson',
    'Thomas',
    'Taylor',
    'Moore',
    'Jackson',
    'Martin',
    'Müller',
    'Schmidt',
    'Dubois',
    'Lefèvre',
    'Rossi',
    'Nowak',
    'Kowalski',
    'Sato',
    'Tanaka',
    'Chen',
    'Wang',
    'Kim',
    'Singh',
    'Patel',
    'Okafor',
    'Haddad',
    'Novák',
    'Jensen',
    'Ødegaard',
    'Silva',
)
_EMAIL_DOMAINS = ('example.com', 'mail.example.org', 'acme.test', 'inbox.example.net')
# (city, ISO country code, postal code pattern: '#' is a digit)
_CITIES = (
    ('New York', 'US', '100##'),
    ('Los Angeles', 'US', '900##'),
    ('Chicago', 'US', '606##'),
    ('Houston', 'US', '770##'),
    ('Seattle', 'US', '981##'),
    ('Boston', 'US', '021##'),
    ('Toronto', 'CA', 'M5# #A#'),
    ('London', 'GB', 'SW1 #AA'),
    ('Paris', 'FR', '750##'),
    ('Lyon', 'FR', '6900#'),
    ('Berlin', 'DE', '10###'),
    ('München', 'DE', '80###'),
    ('Madrid', 'ES', '280##'),
    ('São Paulo', 'BR', '01###-###'),
    ('Zürich', 'CH', '80##'),
    ('Kraków', 'PL', '30-###'),
    ('Tokyo', 'JP', '1##-####'),
    ('Sydney', 'AU', '20##'),
    ('Mumbai', 'IN', '400###'),
    ('Singapore', 'SG', '0#####'),
)
_GENDERS = ('female', 'male', 'non_specific', 'not_specified')
_GENDER_CUMULATIVE = (0.48, 0.95, 0.97, 1.0)
_TIERS = ((20_000, 'platinum'), (8_000, 'gold'), (2_000, 'silver'), (0, 'bronze'))

# Membership statuses as an audience platform reports them: most members are realized or
# carried over as existing, some have exited.
_STATUSES = ('realized', 'existing', 'exited')
_STATUS_CUMULATIVE = (0.55, 0.90, 1.0)

# Presence of optional attributes and identities.
_P_BIRTH_DATE = 0.90
_P_MOBILE_PHONE = 0.85
_P_HOME_ADDRESS = 0.95
_P_EMAIL_IDENTITY = 0.85
_P_CRM_IDENTITY = 0.40

# Kinds of change made to a changed profile, with their weights. A kind that does not apply
# to the profile (say, no realized segment to exit) falls through to the next one; the last
# always applies.
_CHANGE_KINDS = (
    ('segment_exited', 0.15),  # realized/existing -> exited
    ('segment_qualified', 0.15),  # absent -> realized
    ('segment_requalified', 0.12),  # realized, later lastQualificationTime
    ('segment_realized_to_existing', 0.08),
    ('identity_added', 0.15),
    ('mapped_attribute', 0.20),
    ('unmapped_attribute', 0.15),
)


# Letters NFKD does not decompose into a base letter and an accent.
_UNDECOMPOSABLE = str.maketrans({'Ł': 'L', 'ł': 'l', 'Ø': 'O', 'ø': 'o', 'ß': 'ss'})


def _ascii(text: str) -> str:
    folded = unicodedata.normalize('NFKD', text.translate(_UNDECOMPOSABLE))
    folded = folded.encode('ascii', 'ignore').decode('ascii')
    return folded.lower() or 'x'


_ASCII_FIRST = tuple(_ascii(name) for name in _FIRST_NAMES)
_ASCII_LAST = tuple(_ascii(name) for name in _LAST_NAMES)


def _days(start: datetime.date, end: datetime.date) -> tuple[str, ...]:
    return tuple(
        (start + datetime.timedelta(days=n)).isoformat() for n in range((end - start).days)
    )


_HISTORY_DAYS = _days(_HISTORY_START, _PREVIOUS_AS_OF)


class GeneratorSettings:
    """What to generate: sizes, rates and the seed, shared by every file of a pair.

    Attributes:
      profiles: profiles in the previous snapshot.
      seed: the seed everything is derived from.
      segments: the segment pool holds `3 * segments` ids.
      memberships: the fewest and most segments a profile is in (inclusive, each at most
        the pool); drawn uniformly between them.
      unmapped_fields: custom fields per profile, in groups of ten under `_acme`, none of
        them mapped: they lengthen every line without changing what is exported (they are
        the same in both snapshots, and drawn from an RNG of their own so that everything
        else is what it would be without them).
      change_rate: fraction of previous profiles changed in current.
      delete_rate: fraction of previous profiles absent from current.
      new_rate: new profiles in current, as a fraction of `profiles`.
    """

    def __init__(
        self,
        profiles: int,
        seed: int = 42,
        segments: int = 10,
        change_rate: float = 0.10,
        delete_rate: float = 0.01,
        new_rate: float = 0.01,
        memberships: tuple[int, int] = _DEFAULT_MEMBERSHIPS,
        unmapped_fields: int = 0,
    ):
        if profiles < 0:
            raise ValueError(f'profiles must be >= 0, got {profiles}')
        if segments < 1:
            raise ValueError(f'segments must be >= 1, got {segments}')
        fewest, most = memberships
        if not 1 <= fewest <= most:
            raise ValueError(
                f'memberships must be two numbers 1 <= fewest <= most, got {fewest}-{most}'
            )
        if unmapped_fields < 0:
            raise ValueError(f'unmapped_fields must be >= 0, got {unmapped_fields}')
        for name, rate in (
            ('change_rate', change_rate),
            ('delete_rate', delete_rate),
            ('new_rate', new_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f'{name} must be between 0 and 1, got {rate}')
        if change_rate + delete_rate > 1.0:
            raise ValueError(
                f'change_rate + delete_rate must be <= 1, got {change_rate + delete_rate}'
            )
        self.profiles = profiles
        self.seed = seed
        self.segments = segments
        self.change_rate = change_rate
        self.delete_rate = delete_rate
        self.new_rate = new_rate
        self.memberships = (fewest, most)
        self.unmapped_fields = unmapped_fields
        self.new_profiles = round(profiles * new_rate)
        self.segment_pool = tuple(f'seg-{n:04d}' for n in range(1, 3 * segments + 1))
        self.id_width = max(7, len(str(profiles + self.new_profiles)))
        # Change times fall on the day after the previous snapshot's as-of time.
        self.change_day = _PREVIOUS_AS_OF.isoformat()
        self.mapped_segments = sorted(
            random.Random(seed).sample(
                self.segment_pool, min(_MAPPED_SEGMENT_COUNT, len(self.segment_pool))
            )
        )

    def profile_id(self, number: int) -> str:
        """The `_id` of profile `number` (1-based)."""
        return f'p-{number:0{self.id_width}d}'

    def rng(self, number: int) -> random.Random:
        """The RNG profile `number` is generated from (and then changed with)."""
        return random.Random(self.seed * _SEED_STRIDE + number)

    def unmapped_rng(self, number: int) -> random.Random:
        """The RNG of profile `number`'s custom fields, apart from `rng` so that adding
        them changes nothing else."""
        return random.Random(f'{self.seed}/{number}/unmapped')


def _timestamp(day: str, rng: random.Random) -> str:
    second = int(rng.random() * _SECONDS_PER_DAY)
    return f'{day}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z'


def _digits(rng: random.Random, count: int) -> str:
    return f'{rng.randrange(10**count):0{count}d}'


def _postal_code(pattern: str, rng: random.Random) -> str:
    return ''.join(str(int(rng.random() * 10)) if char == '#' else char for char in pattern)


def _pick(rng: random.Random, choices: tuple) -> object:
    return choices[int(rng.random() * len(choices))]


def _email(first: int, last: int, number: int, rng: random.Random) -> str:
    return f'{_ASCII_FIRST[first]}.{_ASCII_LAST[last]}{number}@{_pick(rng, _EMAIL_DOMAINS)}'


def _email_hash(address: str) -> str:
    return hashlib.sha256(address.lower().encode('utf-8')).hexdigest()


def _tier(points: int) -> str:
    for floor, tier in _TIERS:
        if points >= floor:
            return tier
    return _TIERS[-1][1]


def _unmapped_attributes(settings: GeneratorSettings, number: int) -> dict:
    """Profile `number`'s custom fields: groups of ten, of strings, integers, booleans,
    decimals and times in turn, the same in both snapshots."""
    rng = settings.unmapped_rng(number)
    groups: dict = {}
    for n in range(settings.unmapped_fields):
        group = groups.setdefault(f'group{n // _FIELDS_PER_GROUP:02d}', {})
        kind = n % 5
        if kind == 0:
            value: object = f'{rng.getrandbits(64):016x}'
        elif kind == 1:
            value = rng.randrange(1_000_000)
        elif kind == 2:
            value = rng.random() < 0.5
        elif kind == 3:
            value = round(rng.random() * 1000, 2)
        else:
            value = _timestamp(_pick(rng, _HISTORY_DAYS), rng)
        group[f'field{n % _FIELDS_PER_GROUP}'] = value
    return groups


def _make_profile(settings: GeneratorSettings, number: int, rng: random.Random) -> dict:
    """Profile `number`, drawn from `rng` (which must be `settings.rng(number)`)."""
    first = int(rng.random() * len(_FIRST_NAMES))
    last = int(rng.random() * len(_LAST_NAMES))
    person: dict = {'name': {'firstName': _FIRST_NAMES[first], 'lastName': _LAST_NAMES[last]}}
    if rng.random() < _P_BIRTH_DATE:
        person['birthDate'] = (
            f'{1940 + int(rng.random() * 67)}-'
            f'{1 + int(rng.random() * 12):02d}-'
            f'{1 + int(rng.random() * 28):02d}'
        )
    person['gender'] = _GENDERS[bisect.bisect_right(_GENDER_CUMULATIVE, rng.random())]
    email = _email(first, last, number, rng)
    profile: dict = {
        '_id': settings.profile_id(number),
        'person': person,
        'personalEmail': {'address': email},
    }
    if rng.random() < _P_MOBILE_PHONE:
        profile['mobilePhone'] = {'number': f'+1{2 + int(rng.random() * 8)}{_digits(rng, 9)}'}
    if rng.random() < _P_HOME_ADDRESS:
        city, country, postal = _pick(rng, _CITIES)
        profile['homeAddress'] = {
            'city': city,
            'countryCode': country,
            'postalCode': _postal_code(postal, rng),
        }
    points = int(rng.random() ** 2 * 50_000)
    profile['loyalty'] = {'points': points, 'tier': _tier(points)}
    if settings.unmapped_fields:
        profile[_TENANT] = _unmapped_attributes(settings, number)

    pool = settings.segment_pool
    fewest, most = settings.memberships
    count = min(len(pool), fewest + int(rng.random() * (most - fewest + 1)))
    memberships = {}
    for segment in sorted(rng.sample(pool, count)):
        status = _STATUSES[bisect.bisect_right(_STATUS_CUMULATIVE, rng.random())]
        memberships[segment] = {
            'status': status,
            'lastQualificationTime': _timestamp(_pick(rng, _HISTORY_DAYS), rng),
        }
    profile['segmentMembership'] = {'ups': memberships}

    identities = {
        'ecid': [{'id': _digits(rng, 38), 'authenticatedState': 'ambiguous', 'primary': True}]
    }
    has_email = rng.random() < _P_EMAIL_IDENTITY
    if has_email:
        identities['email_lc_sha256'] = [
            {'id': _email_hash(email), 'authenticatedState': 'authenticated', 'primary': False}
        ]
    # Two namespaces at least: without an email identity, the CRM id is known.
    if rng.random() < _P_CRM_IDENTITY or not has_email:
        identities['crmid'] = [_crm_identity(rng)]
    profile['identityMap'] = identities
    return profile


def _crm_identity(rng: random.Random) -> dict:
    return {'id': 'CRM' + _digits(rng, 10), 'authenticatedState': 'authenticated', 'primary': False}


def _segment_exited(settings: GeneratorSettings, profile: dict, rng: random.Random) -> bool:
    memberships = profile['segmentMembership']['ups']
    members = [s for s, m in memberships.items() if m['status'] != 'exited']
    if not members:
        return False
    memberships[_pick(rng, tuple(members))] = {
        'status': 'exited',
        'lastQualificationTime': _timestamp(settings.change_day, rng),
    }
    return True


def _segment_qualified(settings: GeneratorSettings, profile: dict, rng: random.Random) -> bool:
    memberships = profile['segmentMembership']['ups']
    absent = [s for s in settings.segment_pool if s not in memberships]
    if not absent:
        return False
    memberships[_pick(rng, tuple(absent))] = {
        'status': 'realized',
        'lastQualificationTime': _timestamp(settings.change_day, rng),
    }
    return True


def _segment_requalified(settings: GeneratorSettings, profile: dict, rng: random.Random) -> bool:
    memberships = profile['segmentMembership']['ups']
    realized = [s for s, m in memberships.items() if m['status'] == 'realized']
    if not realized:
        return False
    memberships[_pick(rng, tuple(realized))]['lastQualificationTime'] = _timestamp(
        settings.change_day, rng
    )
    return True


def _segment_realized_to_existing(
    settings: GeneratorSettings, profile: dict, rng: random.Random
) -> bool:
    memberships = profile['segmentMembership']['ups']
    realized = [s for s, m in memberships.items() if m['status'] == 'realized']
    if not realized:
        return False
    memberships[_pick(rng, tuple(realized))]['status'] = 'existing'
    return True


def _identity_added(settings: GeneratorSettings, profile: dict, rng: random.Random) -> bool:
    identities = profile['identityMap']
    if 'crmid' not in identities:
        identities['crmid'] = [_crm_identity(rng)]
    else:
        # A second device: another ECID.
        identities['ecid'].append(
            {'id': _digits(rng, 38), 'authenticatedState': 'ambiguous', 'primary': False}
        )
    return True


def _different(rng: random.Random, choices: tuple, current: object) -> object:
    while True:
        choice = _pick(rng, choices)
        if choice != current:
            return choice


def _mapped_attribute(settings: GeneratorSettings, profile: dict, rng: random.Random) -> bool:
    person = profile['person']
    which = int(rng.random() * 5)
    if which == 0:  # married, divorced...
        person['name']['lastName'] = _different(rng, _LAST_NAMES, person['name']['lastName'])
    elif which == 1:  # a new address: the email identity follows it
        old = profile['personalEmail']['address']
        local, _, domain = old.partition('@')
        address = f'{local}@{_different(rng, _EMAIL_DOMAINS, domain)}'
        profile['personalEmail']['address'] = address
        if 'email_lc_sha256' in profile['identityMap']:
            profile['identityMap']['email_lc_sha256'][0]['id'] = _email_hash(address)
    elif which == 2 and 'homeAddress' in profile:  # moved
        home = profile['homeAddress']
        city, country, postal = _different(
            rng, _CITIES, next(c for c in _CITIES if c[0] == home['city'])
        )
        profile['homeAddress'] = {
            'city': city,
            'countryCode': country,
            'postalCode': _postal_code(postal, rng),
        }
    elif which == 3:  # a birth date corrected, or given for the first time
        old = person.get('birthDate', '1970-01-01')
        day = int(old[8:10]) % 28 + 1
        person['birthDate'] = f'{old[:8]}{day:02d}'
    else:  # nickname
        person['name']['firstName'] = _different(rng, _FIRST_NAMES, person['name']['firstName'])
    return True


def _unmapped_attribute(settings: GeneratorSettings, profile: dict, rng: random.Random) -> bool:
    if rng.random() < 0.25 and 'mobilePhone' in profile:  # a new phone
        phone = profile['mobilePhone']
        old = phone['number']
        while phone['number'] == old:
            phone['number'] = f'+1{2 + int(rng.random() * 8)}{_digits(rng, 9)}'
        return True
    # Points earned or spent.
    loyalty = profile['loyalty']
    loyalty['points'] += 1 + int(rng.random() * 500)
    loyalty['tier'] = _tier(loyalty['points'])
    return True


_CHANGES = {
    'segment_exited': _segment_exited,
    'segment_qualified': _segment_qualified,
    'segment_requalified': _segment_requalified,
    'segment_realized_to_existing': _segment_realized_to_existing,
    'identity_added': _identity_added,
    'mapped_attribute': _mapped_attribute,
    'unmapped_attribute': _unmapped_attribute,
}
_KIND_NAMES = tuple(name for name, _ in _CHANGE_KINDS)
_KIND_WEIGHTS = tuple(weight for _, weight in _CHANGE_KINDS)


def _change(settings: GeneratorSettings, profile: dict, rng: random.Random) -> str:
    """Changes `profile` in place in one way, returning the kind of change."""
    start = _KIND_NAMES.index(rng.choices(_KIND_NAMES, _KIND_WEIGHTS)[0])
    for offset in range(len(_KIND_NAMES)):
        kind = _KIND_NAMES[(start + offset) % len(_KIND_NAMES)]
        if _CHANGES[kind](settings, profile, rng):
            return kind
    raise AssertionError('unreachable: unmapped_attribute always applies')


def previous_profiles(settings: GeneratorSettings, first: int, last: int) -> Iterator[dict]:
    """Profiles `first`..`last` (inclusive, 1-based) of the previous snapshot."""
    for number in range(first, min(last, settings.profiles) + 1):
        yield _make_profile(settings, number, settings.rng(number))


def current_profiles(
    settings: GeneratorSettings, first: int, last: int, stats: Counter | None = None
) -> Iterator[dict]:
    """Profiles `first`..`last` (1-based) of the current snapshot, counting changes in `stats`.

    Numbers up to `settings.profiles` are the previous profiles, deleted, changed or kept;
    the numbers after them are new profiles.
    """
    stats = Counter() if stats is None else stats
    deleted_below = settings.delete_rate
    changed_below = settings.delete_rate + settings.change_rate
    for number in range(first, last + 1):
        rng = settings.rng(number)
        profile = _make_profile(settings, number, rng)
        if number > settings.profiles:
            stats['new'] += 1
            yield profile
            continue
        # Drawn after the profile, so the previous snapshot's draws are the same.
        draw = rng.random()
        if draw < deleted_below:
            stats['deleted'] += 1
            continue
        if draw < changed_below:
            stats['changed'] += 1
            stats['kind:' + _change(settings, profile, rng)] += 1
        else:
            stats['unchanged'] += 1
        yield profile


def _ranges(total: int, files: int) -> list[tuple[int, int]]:
    """Splits profiles 1..total into `files` contiguous inclusive ranges."""
    return [(total * k // files + 1, total * (k + 1) // files) for k in range(files)]


def _write_part(
    settings: GeneratorSettings, snapshot: str, first: int, last: int, path: str, fmt: str
) -> tuple[str, int, Counter]:
    stats: Counter = Counter()
    if snapshot == 'previous':
        profiles = previous_profiles(settings, first, last)
    else:
        profiles = current_profiles(settings, first, last, stats)
    return path, write_snapshot(profiles, path, fmt), stats


def _destination_yaml(settings: GeneratorSettings) -> str:
    lines = [
        '# Destination for the generated benchmark snapshots (benchmarks/generate_snapshots.py).',
        'name: benchmark profile exports',
        f'description: Generated profiles (seed {settings.seed}) in '
        f'{len(settings.mapped_segments)} mapped segments streamed to Kinesis',
        'stream: profile-exports',
        'region: us-east-1',
        'segments:',
        *(f'  - {segment}' for segment in settings.mapped_segments),
        'attributes:',
        *(f'  - {attribute}' for attribute in _MAPPED_ATTRIBUTES),
    ]
    return '\n'.join(lines) + '\n'


def generate(
    settings: GeneratorSettings,
    out: str,
    formats: tuple[str, ...] = ('jsonl',),
    files: int = 1,
    jobs: int = 1,
) -> dict:
    """Writes a snapshot pair, destination.yaml and manifest.json under `out`.

    Args:
      settings: what to generate.
      out: the output directory (created if missing). Part files of the formats written
        left there by an earlier run are removed first.
      formats: any of `jsonl`, `parquet`, `avro`; each snapshot is written in every one.
      files: part files per snapshot and format.
      jobs: processes writing part files in parallel.

    Returns:
      The manifest.
    """
    if files < 1:
        raise ValueError(f'files must be >= 1, got {files}')
    for fmt in formats:
        if fmt not in _EXTENSIONS:
            raise ValueError(f'unknown format {fmt!r}: expected one of {", ".join(_EXTENSIONS)}')
    root = Path(out)
    sizes = {'previous': settings.profiles, 'current': settings.profiles + settings.new_profiles}
    tasks = []
    for snapshot, total in sizes.items():
        folder = root / snapshot
        folder.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            for stale in folder.glob(f'part-?????-of-?????.{_EXTENSIONS[fmt]}'):
                stale.unlink()
        for k, (first, last) in enumerate(_ranges(total, files)):
            for fmt in formats:
                name = f'part-{k:05d}-of-{files:05d}.{_EXTENSIONS[fmt]}'
                tasks.append((settings, snapshot, first, last, str(folder / name), fmt))

    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
            results = list(pool.map(_write_part, *zip(*tasks, strict=True)))
    else:
        results = [_write_part(*task) for task in tasks]

    stats: Counter = Counter()
    listing: dict[str, list[dict]] = {'previous': [], 'current': []}
    for task, (path, count, part_stats) in zip(tasks, results, strict=True):
        snapshot, fmt = task[1], task[5]
        listing[snapshot].append(
            {'path': Path(path).relative_to(root).as_posix(), 'format': fmt, 'profiles': count}
        )
        if fmt == formats[0]:  # every format holds the same profiles: count them once
            stats.update(part_stats)

    manifest = {
        'seed': settings.seed,
        'profiles': settings.profiles,
        'formats': list(formats),
        'files_per_snapshot': files,
        'segments': settings.segments,
        'segment_pool': len(settings.segment_pool),
        'memberships': list(settings.memberships),
        'unmapped_fields': settings.unmapped_fields,
        'rates': {
            'change': settings.change_rate,
            'delete': settings.delete_rate,
            'new': settings.new_rate,
        },
        'counts': {
            'previous': settings.profiles,
            'current': settings.profiles - stats['deleted'] + stats['new'],
            'changed': stats['changed'],
            'deleted': stats['deleted'],
            'new': stats['new'],
            'unchanged': stats['unchanged'],
        },
        'change_kinds': {kind: stats['kind:' + kind] for kind in _KIND_NAMES},
        'previous_as_of': f'{_PREVIOUS_AS_OF.isoformat()}T00:00:00Z',
        'changes_on': settings.change_day,
        'mapped_segments': settings.mapped_segments,
        'mapped_attributes': list(_MAPPED_ATTRIBUTES),
        'files': listing,
    }
    (root / 'destination.yaml').write_text(_destination_yaml(settings), encoding='utf-8')
    (root / 'manifest.json').write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + '\n', encoding='utf-8'
    )
    return manifest


def parse_memberships(text: str) -> tuple[int, int]:
    """`FEWEST-MOST` (or one number for both) as two integers."""
    fewest, _, most = text.partition('-')
    try:
        return int(fewest), int(most or fewest)
    except ValueError:
        raise ValueError(
            f'memberships must be FEWEST-MOST, two whole numbers, not {text!r}'
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description='Generate a previous/current pair of profile snapshots for benchmarks.'
    )
    parser.add_argument(
        '--profiles', type=int, required=True, help='profiles in the previous snapshot'
    )
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument(
        '--format',
        default='jsonl',
        choices=(*_EXTENSIONS, 'all'),
        help='file format (default jsonl; all = one file of each format)',
    )
    parser.add_argument('--files', type=int, default=1, help='part files per snapshot (default 1)')
    parser.add_argument(
        '--change-rate',
        type=float,
        default=0.10,
        help='fraction of profiles changed (default 0.10)',
    )
    parser.add_argument(
        '--delete-rate',
        type=float,
        default=0.01,
        help='fraction of profiles deleted (default 0.01)',
    )
    parser.add_argument(
        '--new-rate',
        type=float,
        default=0.01,
        help='new profiles, as a fraction of --profiles (default 0.01)',
    )
    parser.add_argument('--seed', type=int, default=42, help='random seed (default 42)')
    parser.add_argument(
        '--segments', type=int, default=10, help='segment pool of 3x this many ids (default 10)'
    )
    parser.add_argument(
        '--memberships',
        default='6-14',
        help='segments per profile, FEWEST-MOST, drawn uniformly (default 6-14)',
    )
    parser.add_argument(
        '--unmapped-fields',
        type=int,
        default=0,
        help='unmapped custom fields per profile, about 22 bytes of JSON each: long lines '
        '(default 0)',
    )
    parser.add_argument(
        '--jobs',
        type=int,
        default=os.cpu_count() or 1,
        help='parallel writer processes (default: CPU count)',
    )
    args = parser.parse_args(argv)
    formats = tuple(_EXTENSIONS) if args.format == 'all' else (args.format,)
    try:
        memberships = parse_memberships(args.memberships)
        settings = GeneratorSettings(
            args.profiles,
            seed=args.seed,
            segments=args.segments,
            change_rate=args.change_rate,
            delete_rate=args.delete_rate,
            new_rate=args.new_rate,
            memberships=memberships,
            unmapped_fields=args.unmapped_fields,
        )
        manifest = generate(settings, args.out, formats, files=args.files, jobs=args.jobs)
    except ValueError as err:
        parser.error(str(err))
    counts = manifest['counts']
    print(
        f'wrote {counts["previous"]} previous and {counts["current"]} current profiles '
        f'({counts["changed"]} changed, {counts["deleted"]} deleted, {counts["new"]} new) '
        f'to {args.out}'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
