"""A reference snapshot diff in DuckDB: how many profiles the export job should export.

Usage:

    python benchmarks/duckdb_reference.py --current 'DIR/current/*.parquet' \
        --previous 'DIR/previous/*.parquet' --destination_config DIR/destination.yaml \
        [--input_format jsonl|parquet] [--key_field _id] [--on_delete exit|ignore] \
        [--threads 2] [--json]

One SQL query: a full outer join of the two snapshots on the profile key that applies the
export rules of README.md ("What is exported") to the mapped segments (status and
lastQualificationTime), the identities (as a set of (namespace, id) pairs) and the mapped
attribute values, and counts the profiles to export by reason. It reads JSON Lines and
Parquet (DuckDB's Avro reader is an extension that cannot be installed offline).

Where the SQL is knowingly not the job's rule (none of these occur in generated snapshots):
- invalid profiles (a bad status, a wrong type) are not dead-lettered: DuckDB either fails
  to read them or compares what it read;
- an unparseable lastQualificationTime is "not later" instead of dead-lettering the profile,
  and non-canonical times are compared by DuckDB's timestamp parser, not Python's;
- attribute values compare as JSON text, except that two numbers compare as numbers: objects
  with the same members in another order, or with null members (the job drops nulls), differ;
- identity ids are compared as text (the job tells the number 7 from the string "7");
- an empty key is one that is empty after trimming spaces (the job trims all whitespace).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import duckdb
import yaml

from beam_kinesis.formats import format_of_name

__all__ = [
    'DEFAULT_NAMESPACE',
    'MEMBER_STATUSES',
    'REASONS',
    'build_query',
    'load_mapping',
    'main',
    'reference_diff',
    'snapshot_files',
]

# As in the job: a segment written without a namespace is in the profile store's own.
DEFAULT_NAMESPACE = 'ups'
MEMBER_STATUSES = ('realized', 'existing')
# The job's reasons, in the order it picks them (the job also has first_run, not measured).
REASONS = ('segment_change', 'identity_change', 'attribute_change', 'deletion')

# The formats DuckDB reads here; which format a file is comes from the job's own rule.
_READABLE = ('jsonl', 'parquet')
# lastQualificationTime as profile stores write it (2022-01-11T21:24:39Z): such strings
# order as the times they stand for.
_CANONICAL_TIME_LENGTH = 20


def load_mapping(path: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The mapped segments, as (namespace, id), and attribute paths of a destination config.

    Read here rather than with the package, so that the reference does not import Beam.
    """
    with open(path, encoding='utf-8') as handle:
        data = json.load(handle) if path.endswith('.json') else yaml.safe_load(handle)
    segments = []
    for text in data.get('segments') or []:
        namespace, segment_id = (
            text.strip().split(':', 1) if ':' in text else (DEFAULT_NAMESPACE, text)
        )
        segments.append((namespace.strip(), segment_id.strip()))
    if not segments:
        raise ValueError(f'{path} maps no segments')
    return segments, list(data.get('attributes') or [])


def snapshot_files(pattern: str, input_format: str | None = None) -> tuple[list[str], str]:
    """The files of a snapshot path, directory or glob, and their one format."""
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, '*')
    paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not paths:
        raise ValueError(f'no snapshot file matches {pattern!r}')
    formats = set()
    for path in paths:
        if input_format:
            formats.add(input_format)
            continue
        fmt = format_of_name(path)
        if fmt not in _READABLE:
            raise ValueError(f'{path}: DuckDB reads only JSON Lines and Parquet here')
        formats.add(fmt)
    if len(formats) != 1:
        raise ValueError(f'{pattern!r} mixes formats {sorted(formats)}')
    return paths, formats.pop()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_path(parts: list[str]) -> str:
    return '$' + ''.join('.' + json.dumps(part) for part in parts)


def _source(
    paths: list[str],
    fmt: str,
    roots: list[str],
    key_path: list[str],
    con: duckdb.DuckDBPyConnection,
) -> tuple[str, dict[str, str]]:
    """A FROM clause for one snapshot and, per top-level field, an expression of it as JSON
    (the key's and the attributes' roots) or as its typed map (the two maps)."""
    files = '[' + ', '.join(_literal(p) for p in paths) + ']'
    if fmt == 'jsonl':
        types = {root: 'JSON' for root in roots}
        types['segmentMembership'] = (
            'MAP(VARCHAR, MAP(VARCHAR, STRUCT(status VARCHAR, "lastQualificationTime" VARCHAR)))'
        )
        types['identityMap'] = 'MAP(VARCHAR, STRUCT(id VARCHAR)[])'
        if len(key_path) == 1:
            types[key_path[0]] = 'VARCHAR'
        columns = (
            '{'
            + ', '.join(f'{_literal(name)}: {_literal(kind)}' for name, kind in types.items())
            + '}'
        )
        source = f"read_json({files}, format = 'newline_delimited', columns = {columns})"
        return source, {root: _identifier(root) for root in types}
    source = f'read_parquet({files}, union_by_name = true)'
    present = {row[0] for row in con.sql(f'DESCRIBE SELECT * FROM {source}').fetchall()}
    expressions = {}
    for root in [*roots, 'segmentMembership', 'identityMap']:
        if root not in present:
            expressions[root] = 'NULL'
        elif root in ('segmentMembership', 'identityMap') or (
            len(key_path) == 1 and root == key_path[0]
        ):
            expressions[root] = _identifier(root)
        else:
            expressions[root] = f'to_json({_identifier(root)})'
    return source, expressions


def build_query(
    previous: tuple[list[str], str] | None,
    current: tuple[list[str], str],
    segments: list[tuple[str, str]],
    attributes: list[str],
    key_field: str = '_id',
    on_delete: str = 'exit',
    con: duckdb.DuckDBPyConnection | None = None,
) -> str:
    """The SQL that counts the profiles to export, by reason, plus what it compared;
    `previous` None is a first run (every member of a mapped segment is exported)."""
    con = con or duckdb.connect()
    key_path = key_field.split('.')
    attribute_paths = [path.split('.') for path in attributes]
    roots = sorted({key_path[0], *(path[0] for path in attribute_paths)})

    def side(paths_and_format: tuple[list[str], str]) -> str:
        source, column = _source(*paths_and_format, roots, key_path, con)
        if len(key_path) == 1:
            key = f'CAST({column[key_path[0]]} AS VARCHAR)'
        else:
            key = f'({column[key_path[0]]} ->> {_literal(_json_path(key_path[1:]))})'
        selected = [f'{key} AS k']
        for n, (namespace, segment_id) in enumerate(segments):
            entry = f'{column["segmentMembership"]}[{_literal(namespace)}][{_literal(segment_id)}]'
            selected.append(f'({entry}).status AS s{n}')
            selected.append(f'({entry})."lastQualificationTime" AS t{n}')
        # Identities as a sorted set of namespace + U+001F + id.
        selected.append(
            'coalesce(list_sort(list_distinct(flatten(list_transform('
            f'map_entries({column["identityMap"]}), '
            'lambda e: list_transform(e.value, lambda i: e.key || chr(31) || i.id))))), []) AS ids'
        )
        for n, path in enumerate(attribute_paths):
            value = (
                f'json_extract({column[path[0]]}, {_literal(_json_path(path[1:]))})'
                if len(path) > 1
                else f'CAST({column[path[0]]} AS JSON)'
            )
            # A null attribute is an absent one.
            selected.append(
                f"CASE WHEN json_type({value}) = 'NULL' THEN NULL ELSE {value} END AS a{n}"
            )
        return (
            f'SELECT {", ".join(selected)} FROM {source} '
            f"WHERE {key} IS NOT NULL AND trim({key}) <> ''"
        )

    members = ', '.join(_literal(status) for status in MEMBER_STATUSES)

    def member(alias: str, n: int) -> str:
        return f'coalesce({alias}.s{n} IN ({members}), false)'

    def any_member(alias: str) -> str:
        return '(' + ' OR '.join(member(alias, n) for n in range(len(segments))) + ')'

    def later(now: str, before: str) -> str:
        return (
            f"CASE WHEN {now} IS NULL OR {before} IS NULL OR {now} = '' OR {before} = '' "
            f'THEN false '
            f'WHEN length({now}) = {_CANONICAL_TIME_LENGTH} '
            f'AND length({before}) = {_CANONICAL_TIME_LENGTH} '
            f"AND suffix({now}, 'Z') AND suffix({before}, 'Z') THEN {now} > {before} "
            f'ELSE coalesce(try_cast({now} AS TIMESTAMPTZ) > '
            f'try_cast({before} AS TIMESTAMPTZ), false) END'
        )

    segment_change = ' OR '.join(
        f"({member('p', n)} <> {member('c', n)} OR (c.s{n} = 'realized' AND {member('p', n)} "
        f'AND {later(f"c.t{n}", f"p.t{n}")}))'
        for n in range(len(segments))
    )
    numbers = "('UBIGINT', 'BIGINT', 'DOUBLE')"
    attribute_change = (
        ' OR '.join(
            f'(CASE WHEN p.a{n} IS NULL OR c.a{n} IS NULL '
            f'THEN (p.a{n} IS NULL) <> (c.a{n} IS NULL) '
            f'WHEN json_type(p.a{n}) IN {numbers} AND json_type(c.a{n}) IN {numbers} '
            f'THEN CAST(p.a{n} AS DOUBLE) <> CAST(c.a{n} AS DOUBLE) '
            f'ELSE CAST(p.a{n} AS VARCHAR) <> CAST(c.a{n} AS VARCHAR) END)'
            for n in range(len(attribute_paths))
        )
        or 'false'
    )
    deletion = f"CASE WHEN {any_member('p')} THEN 'deletion' END" if on_delete == 'exit' else 'NULL'
    first_run = previous is None
    if first_run:  # no previous snapshot: an empty one of the same shape
        segment_change = f'{any_member("c")}'
    previous_rows = 'SELECT * FROM current WHERE false' if first_run else side(previous)
    changed = 'first_run' if first_run else 'segment_change'
    return f"""
WITH current AS ({side(current)}),
previous AS ({previous_rows}),
joined AS (
  SELECT coalesce(c.k, p.k) AS k,
         CASE WHEN c.k IS NULL THEN {deletion}
              WHEN {segment_change} THEN '{changed}'
              WHEN NOT {any_member('c')} THEN NULL
              WHEN coalesce(p.ids, []) <> c.ids THEN 'identity_change'
              WHEN {attribute_change} THEN 'attribute_change'
         END AS reason
  FROM previous p FULL OUTER JOIN current c ON p.k = c.k),
-- A key seen twice in one snapshot joins to two rows or more: the job exports none of them.
per_key AS (SELECT k, count(*) AS copies, any_value(reason) AS reason FROM joined GROUP BY k)
SELECT reason, count(*) FILTER (WHERE copies = 1) AS profiles,
       count(*) FILTER (WHERE copies > 1) AS duplicated_keys
FROM per_key GROUP BY reason
"""


def reference_diff(
    current: str,
    previous: str | None,
    destination_config: str,
    *,
    input_format: str | None = None,
    key_field: str = '_id',
    on_delete: str = 'exit',
    threads: int = 2,
) -> dict:
    """Runs the reference diff; returns the count of profiles to export and what it took.

    Returns:
      `{'exported': n, 'by_reason': {reason: n}, 'profiles_compared': n,
      'duplicated_keys': n, 'query_seconds': s, 'threads': n, 'format': fmt}`.
    """
    if on_delete not in ('exit', 'ignore'):
        raise ValueError(f'on_delete {on_delete!r} is not exit or ignore')
    segments, attributes = load_mapping(destination_config)
    before = snapshot_files(previous, input_format) if previous else None
    after = snapshot_files(current, input_format)
    con = duckdb.connect()
    con.execute(f'SET threads = {int(threads)}')
    con.execute("SET TimeZone = 'UTC'")  # times without an offset are UTC, as in the job
    con.execute('SET preserve_insertion_order = false')
    started = time.perf_counter()
    query = build_query(before, after, segments, attributes, key_field, on_delete, con)
    rows = con.execute(query).fetchall()
    elapsed = time.perf_counter() - started
    by_reason = {reason: 0 for reason in (('first_run',) if before is None else REASONS)}
    compared = duplicated = 0
    for reason, profiles, duplicated_keys in rows:
        compared += profiles + duplicated_keys
        duplicated += duplicated_keys
        if reason is not None:
            by_reason[reason] = by_reason.get(reason, 0) + profiles
    return {
        'exported': sum(by_reason.values()),
        'by_reason': by_reason,
        'profiles_compared': compared,
        'duplicated_keys': duplicated,
        'query_seconds': round(elapsed, 3),
        'threads': int(threads),
        'format': after[1],
        'duckdb_version': duckdb.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description='Count the profiles the export job should export, with DuckDB.'
    )
    parser.add_argument('--current', required=True, help='path, directory or glob')
    parser.add_argument(
        '--previous', default=None, help='path, directory or glob; without it, a first run'
    )
    parser.add_argument('--destination_config', required=True)
    parser.add_argument('--input_format', choices=_READABLE, default=None)
    parser.add_argument('--key_field', default='_id')
    parser.add_argument('--on_delete', choices=('exit', 'ignore'), default='exit')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', action='store_true', help='print the result as JSON')
    parser.add_argument('--show-sql', action='store_true', help='print the query and stop')
    args = parser.parse_args(argv)
    try:
        if args.show_sql:
            segments, attributes = load_mapping(args.destination_config)
            print(
                build_query(
                    snapshot_files(args.previous, args.input_format) if args.previous else None,
                    snapshot_files(args.current, args.input_format),
                    segments,
                    attributes,
                    args.key_field,
                    args.on_delete,
                )
            )
            return 0
        result = reference_diff(
            args.current,
            args.previous,
            args.destination_config,
            input_format=args.input_format,
            key_field=args.key_field,
            on_delete=args.on_delete,
            threads=args.threads,
        )
    except (OSError, ValueError, duckdb.Error) as err:
        print(f'duckdb_reference: {err}', file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        reasons = ', '.join(
            f'{n:,} {reason.replace("_", " ")}' for reason, n in result['by_reason'].items()
        )
        print(
            f'{result["exported"]:,} profiles to export ({reasons}) of '
            f'{result["profiles_compared"]:,} compared, in {result["query_seconds"]} s '
            f'with {result["threads"]} threads'
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
