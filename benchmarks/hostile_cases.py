"""Runs the export job on hostile inputs and surroundings (issue 13), one process per case,
and prints a table of exit status, wall time and peak memory (RSS of the process tree).

Usage:

    python benchmarks/hostile_cases.py [--code DIR] [--only NAME,...] [--big-line-mib 2048]

`--code DIR` runs the job from another checkout (e.g. an older commit unpacked with
`git archive`), to measure before and after on the same inputs. Inputs are generated in a
temporary directory and removed afterwards; nothing big is committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.run_benchmarks import measure_process  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AS_OF = '2024-06-01T00:00:00Z'
MIB = 1024 * 1024
SEGMENTS = {
    'ups': {'seg-a': {'status': 'realized', 'lastQualificationTime': '2024-05-20T10:00:00Z'}}
}


def profile(key: str, **extra) -> dict:
    document = {
        '_id': key,
        'person': {'name': {'firstName': 'Ann'}},
        'segmentMembership': SEGMENTS,
        'identityMap': {'ecid': [{'id': 'E' + key}]},
    }
    document.update(extra)
    return document


def line(document: dict) -> bytes:
    return json.dumps(document).encode() + b'\n'


def destination(folder: Path, **fields) -> Path:
    config = {
        'name': 'hostile',
        'stream': 'hostile',
        'segments': ['seg-a'],
        'attributes': ['person.name.firstName', 'person.deep'],
    }
    config.update(fields)
    path = folder / 'destination.json'
    path.write_text(json.dumps(config))
    return path


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b'1' + b'}' * (depth - 1)


def gzip_one_long_line(path: Path, size: int) -> None:
    """A gzip file holding one `size`-byte line (then a valid line), written in pieces."""
    with open(path, 'wb') as raw:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        raw.write(compressor.compress(b'{"_id":"p-big","junk":"'))
        piece = b'x' * (16 * MIB)
        for _ in range(size // len(piece)):
            raw.write(compressor.compress(piece))
        raw.write(compressor.compress(b'"}\n' + line(profile('p-after'))))
        raw.write(compressor.flush())


# Each case: (name, prepare(folder) -> (argv, setup_after or None)).


def case_dangling_symlink(folder):
    snapshot = folder / 'snap'
    snapshot.mkdir()
    (snapshot / 'part-1.jsonl').write_bytes(line(profile('p-1')))
    os.symlink(folder / 'gone.jsonl', snapshot / 'part-2.jsonl')
    previous = folder / 'prev.jsonl'
    previous.write_bytes(line(profile('p-1')) + line(profile('p-2')))
    return ['--current', str(snapshot), '--previous', str(previous)]


def case_symlink_loop(folder):
    snapshot = folder / 'snap'
    snapshot.mkdir()
    (snapshot / 'part-1.jsonl').write_bytes(line(profile('p-1')))
    os.symlink(snapshot / 'b.jsonl', snapshot / 'a.jsonl')
    os.symlink(snapshot / 'a.jsonl', snapshot / 'b.jsonl')
    return ['--current', str(snapshot / '*.jsonl')]


def case_fifo(folder):
    snapshot = folder / 'snap'
    snapshot.mkdir()
    (snapshot / 'part-1.jsonl').write_bytes(line(profile('p-1')))
    os.mkfifo(snapshot / 'part-2.jsonl')
    return ['--current', str(snapshot)]


def case_nested_2000_line(folder):
    current = folder / 'current.jsonl'
    current.write_bytes(line(profile('p-1')) + nested(2000) + b'\n' + line(profile('p-3')))
    return ['--current', str(current)]


def case_nested_600_attribute(folder):
    current = folder / 'current.jsonl'
    deep = json.loads(nested(600))
    current.write_bytes(
        line(profile('p-1')) + line(profile('p-2', person={'deep': deep})) + line(profile('p-3'))
    )
    return ['--current', str(current)]


def case_long_line_in_gzip(folder, size):
    current = folder / 'current.jsonl.gz'
    gzip_one_long_line(current, size)
    return ['--current', str(current)]


def case_invalid_256_mib_line(folder):
    current = folder / 'current.jsonl'
    with open(current, 'wb') as handle:
        handle.write(line(profile('p-1')))
        handle.write(b'{"_id":"p-2","junk":"' + b'x' * (256 * MIB) + b'\n')  # no closing
        handle.write(line(profile('p-3')))
    return ['--current', str(current)]


# A list of lists, each level nine aliases of the one before: 9**8 strings once expanded.
_BOMB = (
    '[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"], '
    + ', '.join(f'&{chr(98 + i)} [' + ','.join([f'*{chr(97 + i)}'] * 9) + ']' for i in range(7))
    + ']'
)


def case_yaml_aliases_in_name(folder):
    config = folder / 'destination.yaml'
    config.write_text('stream: hostile\nsegments: [seg-a]\nname: ' + _BOMB + '\n')
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    return ['--current', str(folder / 'current.jsonl'), '--destination_config', str(config)]


def case_yaml_aliases_in_region(folder):
    config = folder / 'destination.yaml'
    config.write_text('stream: hostile\nsegments: [seg-a]\nregion: ' + _BOMB + '\n')
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    return ['--current', str(folder / 'current.jsonl'), '--destination_config', str(config)]


def case_list_as_name(folder):
    config = destination(folder, name=['a', 'b'])
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    return ['--current', str(folder / 'current.jsonl'), '--destination_config', str(config)]


def case_output_is_a_file(folder):
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    (folder / 'out-file').write_text('not a directory')
    return ['--current', str(folder / 'current.jsonl'), '--output', str(folder / 'out-file')]


def case_output_read_only(folder):
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    (folder / 'ro').mkdir()
    os.chmod(folder / 'ro', 0o555)
    if os.geteuid() == 0:
        subprocess.run(['chattr', '+i', str(folder / 'ro')], check=True)
    return ['--current', str(folder / 'current.jsonl'), '--output', str(folder / 'ro')]


def case_dead_letter_read_only(folder):
    (folder / 'current.jsonl').write_bytes(b'not json\n' + line(profile('p-1')))
    (folder / 'ro').mkdir()
    os.chmod(folder / 'ro', 0o555)
    if os.geteuid() == 0:
        subprocess.run(['chattr', '+i', str(folder / 'ro')], check=True)
    return ['--current', str(folder / 'current.jsonl'), '--dead_letter', str(folder / 'ro')]


def case_duplicate_member(folder):
    (folder / 'current.jsonl').write_bytes(
        b'{"_id":"p-1","_id":"p-2","segmentMembership":'
        + json.dumps(SEGMENTS).encode()
        + b'}\n'
        + line(profile('p-3'))
    )
    return ['--current', str(folder / 'current.jsonl')]


def case_bom(folder):
    (folder / 'current.jsonl').write_bytes(b'\xef\xbb\xbf' + line(profile('p-1')))
    return ['--current', str(folder / 'current.jsonl')]


def case_empty_as_of(folder):
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    return ['--current', str(folder / 'current.jsonl'), '--as_of', '']


def case_full_width_as_of(folder):
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    return ['--current', str(folder / 'current.jsonl'), '--as_of', '２０２４-06-01T00:00:00Z']


def case_earlier_shards(folder):
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    (folder / 'out').mkdir()
    for shard in range(4):  # what a run with --output_shards 4 left
        (folder / 'out' / f'exports-{shard:05d}-of-00004.jsonl').write_bytes(b'{}\n')
    return ['--current', str(folder / 'current.jsonl'), '--output_shards', '1']


def case_directory_in_use(folder):
    (folder / 'current.jsonl').write_bytes(line(profile('p-1')))
    (folder / 'out').mkdir()
    lock = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': AS_OF, 'run': 'x'}
    (folder / 'out' / '.beam-kinesis.lock').write_text(json.dumps(lock))  # a live run's
    return ['--current', str(folder / 'current.jsonl')]


CASES = {
    'dangling symlink in a snapshot directory': case_dangling_symlink,
    'symlink loop matched by a glob': case_symlink_loop,
    'FIFO in a snapshot directory': case_fifo,
    'line nested 2,000 deep, valid lines around it': case_nested_2000_line,
    'mapped attribute nested 600 deep': case_nested_600_attribute,
    'one long line in a small gzip': None,  # sized by --big-line-mib
    '256 MiB invalid line': case_invalid_256_mib_line,
    'YAML aliases (426 bytes) in name': case_yaml_aliases_in_name,
    'YAML aliases in region': case_yaml_aliases_in_region,
    'a list as name': case_list_as_name,
    '--output is a regular file': case_output_is_a_file,
    '--output read-only': case_output_read_only,
    '--dead_letter read-only': case_dead_letter_read_only,
    'duplicate _id in one object': case_duplicate_member,
    'UTF-8 BOM at the start of a file': case_bom,
    "--as_of ''": case_empty_as_of,
    '--as_of in full-width digits': case_full_width_as_of,
    'earlier run left 4 export shards; now --output_shards 1': case_earlier_shards,
    'a run holds the --output directory': case_directory_in_use,
}


def run_case(name: str, prepare, code: Path, timeout: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix='hostile-'))
    try:
        argv = prepare(folder)
        if '--destination_config' not in argv:
            argv += ['--destination_config', str(destination(folder))]
        if '--as_of' not in argv:
            argv += ['--as_of', AS_OF]
        if '--output' not in argv:
            argv += ['--output', str(folder / 'out')]
        if '--dead_letter' not in argv:
            argv += ['--dead_letter', str(folder / 'dead')]
        env = dict(os.environ, PYTHONPATH=str(code))
        command = [sys.executable, '-m', 'pipelines.export_profiles', *argv]
        result = measure_process(
            command,
            cwd=folder,
            env=env,
            timeout=timeout,
            stdout_path=folder / 'stdout',
            stderr_path=folder / 'stderr',
        )
        err = [
            text
            for text in (folder / 'stderr').read_text(errors='replace').splitlines()
            if text.strip() and 'apitools not found' not in text
        ]
        result['stderr_lines'] = len(err)
        result['stderr_bytes'] = (folder / 'stderr').stat().st_size
        result['last_stderr'] = err[-1][:160] if err else ''
        result['dead_letters'] = sum(
            1 for path in (folder / 'dead').glob('dead_letters-*') for _ in open(path, 'rb')
        )
        result['exports'] = (
            sum(1 for path in (folder / 'out').glob('exports-*') for _ in open(path, 'rb'))
            if ((folder / 'out').is_dir())
            else 0
        )
        result['export_files'] = (
            len(list((folder / 'out').glob('exports-*'))) if ((folder / 'out').is_dir()) else 0
        )
        return result
    finally:
        for sub in ('ro',):
            if (folder / sub).exists():
                subprocess.run(
                    ['chattr', '-i', str(folder / sub)], check=False, stderr=subprocess.DEVNULL
                )
                os.chmod(folder / sub, 0o755)
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--code', default=str(REPO), help='checkout whose job is run')
    parser.add_argument('--only', default='', help='comma-separated case names (substrings)')
    parser.add_argument('--big-line-mib', type=int, default=2048)
    parser.add_argument('--timeout', type=float, default=300)
    parser.add_argument('--json', default=None, help='also write the results here')
    args = parser.parse_args(argv)
    size = args.big_line_mib * MIB
    cases = dict(CASES)
    cases['one long line in a small gzip'] = lambda folder: case_long_line_in_gzip(folder, size)
    wanted = [word for word in args.only.split(',') if word]
    results = {}
    print('| case | exit | seconds | peak MiB | dead letters | exports (files) | stderr |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | --- |')
    for name, prepare in cases.items():
        if wanted and not any(word in name for word in wanted):
            continue
        label = name.replace('one long line', f'one {args.big_line_mib} MiB line')
        started = time.time()
        result = run_case(label, prepare, Path(args.code), args.timeout)
        result['wall'] = round(time.time() - started, 1)
        results[label] = result
        exit_code = result['exit_code'] if result['status'] != 'timeout' else 'timeout'
        stderr = result['last_stderr'].replace('|', '\\|')
        if result['stderr_lines'] > 1:
            stderr = f'({result["stderr_lines"]} lines, {result["stderr_bytes"]:,} B) {stderr}'
        print(
            f'| {label} | {exit_code} | {result["seconds"]:.1f} | '
            f'{result["peak_rss_bytes"] / MIB:,.0f} | {result["dead_letters"]} | '
            f'{result["exports"]} ({result["export_files"]}) | {stderr} |',
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
