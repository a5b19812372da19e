"""The export job: diff two profile snapshots and send the changed profiles to Kinesis.

    read snapshots -> key by profile id -> CoGroupByKey(previous, current) -> classify change
    -> format export JSON -> write to Kinesis or files -> dead letters
"""

from __future__ import annotations

import datetime
import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_kinesis.changes import ON_DELETE_POLICIES, REASONS, DetectChanges
from beam_kinesis.config import ConfigError, load_destination_config, parse_as_of
from beam_kinesis.deadletter import WriteDeadLetters
from beam_kinesis.export import FormatExport
from beam_kinesis.snapshot import FORMATS, ReadSnapshot, SnapshotError
from beam_kinesis.summary import collect_counters, format_summary

__all__ = ['ExportOptions', 'build', 'run', 'main', 'EXIT_OK', 'EXIT_START_FAILED',
           'EXIT_DEAD_LETTERS']

_LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_START_FAILED = 2    # nothing was read or written: the one sentence printed says why
EXIT_DEAD_LETTERS = 3    # the job finished, but some records are in the dead-letter output


class ExportOptions(PipelineOptions):
    """The export job's own options; every standard Beam option is accepted beside them."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument('--current', required=True,
                            help='Path, directory or glob of the current snapshot.')
        parser.add_argument('--previous', default=None,
                            help='Path, directory or glob of the previous snapshot; without '
                                 'it the run is a first run (every mapped member exported).')
        parser.add_argument('--destination_config', required=True,
                            help='The destination config file (YAML or JSON).')
        parser.add_argument('--output', default=None,
                            help='Directory to write the export records to as JSON Lines '
                                 '(exports-SSSSS-of-NNNNN.jsonl), one record per line.')
        parser.add_argument('--dead_letter', default='dead_letters',
                            help='Directory for dead-letter JSON Lines files.')
        parser.add_argument('--as_of', default=None,
                            help='Time stamped on synthesised exits, YYYY-MM-DDTHH:MM:SSZ '
                                 '(default: the job start, UTC).')
        parser.add_argument('--key_field', default='_id',
                            help='Dotted path of the profile key.')
        parser.add_argument('--on_delete', default='exit', choices=ON_DELETE_POLICIES,
                            help='Profiles deleted since the previous snapshot: export their '
                                 'memberships as exited once (exit) or not at all (ignore).')
        parser.add_argument('--input_format', default=None, choices=sorted(FORMATS),
                            help='Format of every snapshot file (default: by extension).')


def build(pipeline: beam.Pipeline, options: ExportOptions, config, as_of: str) -> dict:
    """Wires the job's transforms into `pipeline` and returns its labelled outputs."""
    detect = DetectChanges(config, key_field=options.key_field, on_delete=options.on_delete)
    snapshots, dead_letters = {}, []
    for name in ('previous', 'current'):
        pattern = getattr(options, name)
        if pattern is None:
            continue
        read = pipeline | f'Read{name.title()}' >> ReadSnapshot(
            pattern, options.input_format, fields=detect.fields, label=name)
        snapshots[name] = read.records
        dead_letters.append(read.dead_letters)
    changes = snapshots | 'DetectChanges' >> detect
    dead_letters.append(changes['dead_letters'])
    export = changes['changes'] | 'FormatExport' >> FormatExport(config.segments, as_of)
    dead_letters.append(export.dead_letters)
    outputs = {'records': export.records}
    if options.output:
        outputs['files'] = (export.records
                            | 'RecordText' >> beam.Map(lambda item: item[1].decode('utf-8'))
                            | 'WriteExports' >> beam.io.WriteToText(
                                beam.io.filesystems.FileSystems.join(options.output,
                                                                     'exports'),
                                file_name_suffix='.jsonl'))
    outputs['dead_letters'] = (dead_letters
                               | 'AllDeadLetters' >> beam.Flatten()
                               | 'WriteDeadLetters' >> WriteDeadLetters(options.dead_letter))
    return outputs


_SUMMARY = {
    'Read': [('previous snapshot records', 'previous_records_read'),
             ('current snapshot records', 'current_records_read'),
             ('profiles compared', 'profiles_compared')],
    'Exported': [(f'by {reason.replace("_", " ")}', f'exported_{reason}')
                 for reason in REASONS],
    'Dead letters': [(f'{stage}', f'dead_letters_{stage}')
                     for stage in ('read', 'validate', 'join', 'format', 'write')],
}


def _start_error(message: str) -> int:
    print(f'beam-kinesis-export: {message}', file=sys.stderr)
    return EXIT_START_FAILED


def run(argv: list[str] | None = None) -> int:
    """Runs the job; returns the process exit status (see `EXIT_*`)."""
    options = PipelineOptions(argv).view_as(ExportOptions)
    try:
        config = load_destination_config(options.destination_config)
        as_of = parse_as_of(options.as_of) if options.as_of else (
            datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
        pipeline = beam.Pipeline(options=options)
        outputs = build(pipeline, options, config, as_of)
    except (ConfigError, SnapshotError) as err:
        return _start_error(str(err))
    del outputs
    result = pipeline.run()
    result.wait_until_finish()
    counters = collect_counters(result)
    exported = sum(counters.get(f'exported_{reason}', 0) for reason in REASONS)
    dead = sum(value for name, value in counters.items() if name.startswith('dead_letters_'))
    print(format_summary(counters, _SUMMARY))
    print(f'Exported {exported:,} profiles as of {as_of}; {dead:,} dead letters'
          + (f' in {options.dead_letter}' if dead else '') + '.')
    return EXIT_DEAD_LETTERS if dead else EXIT_OK


def main() -> None:
    """Console-script entry point (`beam-kinesis-export`)."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
