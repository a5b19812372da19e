"""The export job's options, and the one check every subcommand that takes them runs first.

Beam parses a command line leniently: an option no options class knows (`--max_retires 3`,
`--stream-name x`, `--out DIR`) is dropped with a warning, so a misspelt destination flag sent
a whole run's exports to the embedded local Kinesis, where they were thrown away; and a
number out of range (`--join_buckets 0`) failed deep inside the pipeline with a traceback.
`parse_job_options` refuses such a command line at start with one sentence (an
`OptionsError`, exit status 2), suggests the flag that was probably meant, and still lets
every one of Beam's own pipeline options (`--runner`, `--direct_num_workers`,
`--flink_master`, ...) through.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from beam_kinesis.config import ConfigError
from beam_kinesis.engine import DEFAULT_BUCKETS, ENGINES, ON_DELETE_POLICIES
from beam_kinesis.kinesis import KinesisConfig
from beam_kinesis.runners import dask_options
from beam_kinesis.sink_options import (
    CREDENTIAL_FLAGS,
    CREDENTIALS_GROUP,
    SINK_GROUP,
    SINK_TUNING_OPTIONS,
    KinesisSinkOptions,
    add_credential_help,
    sink_tuning,
)
from beam_kinesis.snapshot import DEFAULT_MAX_LINE_BYTES, FORMATS

__all__ = [
    'ExportOptions',
    'OptionsError',
    'BEAM_OPTIONS_HELP',
    'beam_options_epilog',
    'sort_groups',
    'beam_help',
    'parse_job_options',
    'did_you_mean',
    'unknown_arguments',
    'check_ranges',
    'help_parser',
    'INPUT_GROUP',
    'DESTINATION_GROUP',
    'RUNNER_GROUP',
]

INPUT_GROUP = 'input (the snapshots and how they are read)'
DESTINATION_GROUP = 'destination (the config, and what the run writes where)'
RUNNER_GROUP = "runner (the diff engine; Beam's pipeline options also go here)"

# Where `--help` sends people for the options of Beam itself, which it does not list.
BEAM_OPTIONS_URL = (
    'https://beam.apache.org/releases/pydoc/current/apache_beam.options.pipeline_options.html'
)
BEAM_OPTIONS_HELP = (
    'Every Apache Beam pipeline option is accepted too (--runner, --direct_num_workers, '
    f'--flink_master, --region, ...): they are described at {BEAM_OPTIONS_URL} and listed '
    'by --help_beam.'
)


def beam_options_epilog(prog: str) -> str:
    """The end of a job's `--help`, with the link unbroken (argparse would wrap it)."""
    return (
        "Apache Beam's own pipeline options are accepted too (--runner, "
        '--direct_num_workers,\n--flink_master, --region, ...). They are described at\n'
        f'  {BEAM_OPTIONS_URL}\nand listed by `{prog} --help_beam`.'
    )


class OptionsError(ConfigError):
    """A command line the job refuses at start; the message is one sentence."""


class ExportOptions(PipelineOptions):
    """The export job's own options; `KinesisSinkOptions` and Beam's own are accepted beside
    them."""

    def __getattr__(self, name: str):
        # The sink's options were this class's before they moved to KinesisSinkOptions; code
        # written against a view of this class (`options.stream_name`) still reads them.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _SINK_OPTION_NAMES:
                return getattr(self.view_as(KinesisSinkOptions), name)
            raise

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        # Not argparse-required: Beam parses every registered options class on every
        # pipeline of the process (and on workers), where these flags are absent.
        source = parser.add_argument_group(INPUT_GROUP)
        source.add_argument(
            '--current',
            default=None,
            help='Path, directory or glob of the current snapshot (required).',
        )
        source.add_argument(
            '--previous',
            default=None,
            help='Path, directory or glob of the previous snapshot; without '
            'it the run is a first run (every mapped member exported).',
        )
        source.add_argument(
            '--input_format',
            default=None,
            choices=sorted(FORMATS),
            help='Format of every snapshot file (default: by extension).',
        )
        source.add_argument('--key_field', default='_id', help='Dotted path of the profile key.')
        source.add_argument(
            '--max_line_bytes',
            default=DEFAULT_MAX_LINE_BYTES,
            type=int,
            help='Longest JSON line read, in bytes; a longer one is a dead '
            'letter, skipped without being held in memory.',
        )
        source.add_argument(
            '--as_of',
            default=None,
            help='Time stamped on synthesised exits, YYYY-MM-DDTHH:MM:SSZ '
            '(default: the job start, UTC).',
        )
        source.add_argument(
            '--previous_as_of',
            default=None,
            help='Time of the previous snapshot, YYYY-MM-DDTHH:MM:SSZ: a '
            'segment mapped after it (mapped_at) and by --as_of is newly '
            'mapped, and all its members are exported. Needed with '
            '--previous when a segment has a mapped_at.',
        )
        source.add_argument(
            '--on_delete',
            default='exit',
            choices=ON_DELETE_POLICIES,
            help='Profiles deleted since the previous snapshot: export their '
            'memberships as exited once (exit) or not at all (ignore).',
        )
        source.add_argument(
            '--allow_empty_current',
            action='store_true',
            help='Run even when every file of the current snapshot is empty '
            '(every member of the previous one is then exported as '
            'deleted).',
        )
        target = parser.add_argument_group(DESTINATION_GROUP)
        target.add_argument(
            '--destination_config',
            default=None,
            help='The destination config file, YAML or JSON (required).',
        )
        target.add_argument(
            '--output',
            default=None,
            help='Directory to write the export records to as JSON Lines '
            '(exports-SSSSS-of-NNNNN.jsonl), one record per line.',
        )
        target.add_argument(
            '--output_shards',
            default=1,
            type=int,
            help='Files the export records are spread over (by a hash of '
            'the record); each is written whole, its lines sorted.',
        )
        target.add_argument(
            '--dead_letter',
            default='dead_letters',
            help='Directory for dead-letter JSON Lines files.',
        )
        target.add_argument(
            '--report',
            default=None,
            help='Where the run report (the counts of the summary, JSON) is '
            'written; on a remote runner, a path on shared storage '
            '(default: a local temporary file).',
        )
        target.add_argument(
            '--html_report',
            default=None,
            help='Write the run report as one self-contained HTML file with '
            'charts (exports by reason, dead letters by stage, records '
            'per shard, send rate and throttling, retries) to this local '
            'path; needs matplotlib (beam-kinesis[report]).',
        )
        target.add_argument(
            '--retry_failed',
            default=None,
            help='Dead-letter directory or glob of an earlier run: its write '
            'dead letters are sent again, as they were, before this '
            "run's records.",
        )
        target.add_argument(
            '--checkpoint',
            default=None,
            help='Directory (local, gs://, s3://) where the run records what '
            'Kinesis acknowledged; the same command run again sends only '
            'the rest. Needs --as_of.',
        )
        target.add_argument(
            '--embedded_shards',
            default=2,
            type=int,
            help='Shards of the stream the embedded local Kinesis creates '
            '(no --stream_name, --endpoint_url or --output).',
        )
        runner = parser.add_argument_group(RUNNER_GROUP)
        runner.add_argument(
            '--engine',
            default='fast',
            choices=ENGINES,
            help='The diff engine: fast (bucket batches compared by their '
            'bytes) or reference (one view per record, grouped by '
            'profile: slower, the oracle the fast one is tested against).',
        )
        runner.add_argument(
            '--join_buckets',
            default=DEFAULT_BUCKETS,
            type=int,
            help='Buckets of profile keys the snapshots are joined in; raise '
            'it for very large snapshots on many workers.',
        )
        runner.add_argument(
            '--quiet',
            action='store_true',
            help='No live progress line on stderr (it is drawn only on a '
            'terminal, and only on the DirectRunner).',
        )


# The options of KinesisSinkOptions, readable from an ExportOptions view too.
_SINK_OPTION_NAMES = frozenset(
    {'stream_name', 'aws_region', 'endpoint_url', 'aws_role_arn', 'aws_role_session_name'}
    | {name for name, _, _ in SINK_TUNING_OPTIONS}
)


# Integer options of the job and their allowed range (None: no upper bound). Kinesis's own
# limits (KinesisConfig) check the sink's numbers.
_RANGES: dict[str, tuple[int, int | None]] = {
    'output_shards': (1, 100_000),
    'join_buckets': (1, 10_000_000),
    'embedded_shards': (1, 10_000),
    'max_line_bytes': (1, None),
}


class _RaisingParser(_BeamArgumentParser):
    """Beam's parser, but a bad value raises instead of printing usage and exiting."""

    def error(self, message: str):
        raise OptionsError(f'{message[:1].upper()}{message[1:]} (see --help).')


def _parser(classes: Iterable[type[PipelineOptions]]) -> _RaisingParser:
    parser = _RaisingParser(allow_abbrev=False, add_help=False)
    for cls in classes:
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _beam_classes() -> list[type[PipelineOptions]]:
    """Every options class Beam itself would parse with (direct subclasses, deduplicated by
    name, as `PipelineOptions.get_all_options` does)."""
    unique: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():
        unique.setdefault(str(cls), cls)
    return list(unique.values())


def _long_flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(
        {
            flag
            for action in parser._actions  # pylint: disable=protected-access
            for flag in action.option_strings
            if flag.startswith('--')
        }
    )


def did_you_mean(flag: str, own: Sequence[str], others: Sequence[str] = ()) -> str | None:
    """The option probably meant by an unknown `flag`, or None.

    Dashes inside a name count as underscores (`--stream-name` is `--stream_name`). The job's
    own flags are preferred: Beam has some hundred options, and `--out` should suggest
    `--output`, not a Dataflow option that happens to be as close.
    """
    name = '--' + flag.lstrip('-').replace('-', '_')
    for candidates, cutoff in ((own, 0.6), (others, 0.8)):
        if name in candidates:
            return name
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=cutoff)
        if close:
            return close[0]
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def unknown_arguments(leftover: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits what no parser took into unknown flags (names only, never their values, which
    may be secrets) and stray words that follow no flag."""
    flags: list[str] = []
    stray: list[str] = []
    after_flag = False
    for token in leftover:
        if token == '--':
            break
        if token.startswith('-') and not _is_number(token):
            flags.append(token.split('=', 1)[0])
            after_flag = '=' not in token
        elif after_flag:
            after_flag = False  # the unknown flag's value
        else:
            stray.append(token)
    return flags, stray


def check_ranges(
    options: PipelineOptions, ranges: dict[str, tuple[int, int | None]] | None = None
) -> None:
    """Refuses an integer option outside its range, and a malformed `--key_field`.

    Raises:
      OptionsError: naming the flag and its value.
    """
    job = options.view_as(ExportOptions)
    for name, (low, high) in (_RANGES if ranges is None else ranges).items():
        value = getattr(job, name)
        if high is None and value < low:
            raise OptionsError(
                f'--{name} {value} must be positive.'
                if low == 1
                else f'--{name} {value} must be at least {low}.'
            )
        if high is not None and not low <= value <= high:
            raise OptionsError(f'--{name} {value} must be an integer from {low:,} to {high:,}.')
    if not job.key_field or any(not part for part in job.key_field.split('.')):
        raise OptionsError(
            f'--key_field {job.key_field!r} is not a dotted path (names '
            'separated by single dots, such as _id or identity.id).'
        )
    try:
        KinesisConfig('range-check', **sink_tuning(options))
    except ValueError as err:
        raise OptionsError(f'Sink option: {err}.') from err


def _register_dask_options(argv: Sequence[str]) -> None:
    """Imports Beam's DaskOptions when the command line asks for Dask: Beam registers them
    only with its Dask runner module, so `--dask_client_address` would otherwise look unknown.

    Raises:
      OptionsError: Dask is asked for but not installed.
    """
    wanted = any(
        token.startswith('--dask_')
        or token.rsplit('.', 1)[-1] == 'DaskRunner'
        or token.startswith('--runner=')
        and token.endswith('DaskRunner')
        for token in argv
    )
    if not wanted:
        return
    try:
        dask_options()
    except ImportError as err:
        raise OptionsError(
            'The DaskRunner needs dask and distributed: pip install "beam-kinesis[dask]".'
        ) from err


def parse_job_options(
    argv: Sequence[str],
    classes: Sequence[type[PipelineOptions]] = (ExportOptions, KinesisSinkOptions),
    *,
    ranges: dict[str, tuple[int, int | None]] | None = None,
    extra_flags: Sequence[str] = (),
) -> PipelineOptions:
    """Parses a job's command line (credentials already split off) or refuses it.

    Args:
      argv: the arguments, without the AWS credential flags (see `split_credentials`).
      classes: the job's own options classes; Beam's registered ones are accepted too.
      ranges: integer options and their ranges (default: the export job's).
      extra_flags: flags the caller parsed itself (the backfill's), for suggestions only.

    Returns:
      The `PipelineOptions` of `argv`.

    Raises:
      OptionsError: an unknown or misspelt option, a stray argument, a value of the wrong
        type or out of range; the message is one sentence.
    """
    argv = list(argv)
    _register_dask_options(argv)
    own = _parser(classes)
    # The job's own values first, so that `--join_buckets x` names the job's flag.
    own.parse_known_args(argv)
    everything = _parser(
        {
            **{str(cls): cls for cls in _beam_classes()},
            **{str(cls): cls for cls in classes},
        }.values()
    )
    _, leftover = everything.parse_known_args(argv)
    flags, stray = unknown_arguments(leftover)
    if flags:
        own_flags = sorted({*_long_flags(own), *CREDENTIAL_FLAGS, *extra_flags})
        all_flags = _long_flags(everything)
        named = []
        for flag in dict.fromkeys(flags):
            guess = did_you_mean(flag, own_flags, all_flags)
            named.append(f'{flag} (did you mean {guess}?)' if guess else flag)
        raise OptionsError(
            f'Unknown option{"s" if len(named) > 1 else ""} {", ".join(named)}; see --help.'
        )
    if stray:
        raise OptionsError(
            f'Unexpected argument {stray[0]!r}: every value follows its '
            'option, as in --current PATH (see --help).'
        )
    options = PipelineOptions(argv)
    if ExportOptions in classes:
        check_ranges(options, ranges)
    return options


def help_parser(
    prog: str,
    description: str,
    classes: Sequence[type[PipelineOptions]] = (ExportOptions, KinesisSinkOptions),
    suppress: Iterable[str] = (),
    usage: str | None = None,
) -> argparse.ArgumentParser:
    """A parser whose `--help` lists the job's options by group (input, destination, sink,
    runner) and says where Beam's own are described; it parses nothing."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=beam_options_epilog(prog),
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=usage or '%(prog)s --current PATH --destination_config FILE [options]',
    )
    parser.add_argument(
        '--help_beam', action='store_true', help="List Apache Beam's own pipeline options and exit."
    )
    for cls in classes:
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    add_credential_help(parser)
    # Groups in the order a run reads them: what goes in, where it goes, how, on what.
    sort_groups(parser)
    hidden = set(suppress)
    for action in parser._actions:  # pylint: disable=protected-access
        if hidden & set(action.option_strings):
            action.help = argparse.SUPPRESS
    return parser


def sort_groups(parser: argparse.ArgumentParser) -> None:
    """Orders a help parser's groups as a run reads them: the command's own flags, what goes
    in, where it goes, how it is sent (credentials last of that), on what runner."""
    order = [INPUT_GROUP, DESTINATION_GROUP, SINK_GROUP, CREDENTIALS_GROUP, RUNNER_GROUP]
    parser._action_groups.sort(  # pylint: disable=protected-access
        key=lambda group: order.index(group.title) + 1 if group.title in order else 0
    )


def beam_help(prog: str) -> str:
    """The help text of every Apache Beam pipeline option, for `--help_beam`."""
    ours = {str(ExportOptions), str(KinesisSinkOptions)}
    parser = argparse.ArgumentParser(
        prog=prog,
        add_help=False,
        allow_abbrev=False,
        usage='%(prog)s [Beam pipeline options]',
        description="Apache Beam's own pipeline options, accepted by every job subcommand.",
        conflict_handler='resolve',
    )
    for cls in _beam_classes():
        if str(cls) not in ours:
            group = parser.add_argument_group(cls.__name__)
            cls._add_argparse_args(_GroupAdapter(group))  # pylint: disable=protected-access
    return parser.format_help()


class _GroupAdapter:
    """Lets Beam's options classes, which call `add_value_provider_argument` and
    `add_argument_group` on a parser, add their flags to one help group."""

    def __init__(self, group) -> None:
        self._group = group

    def add_argument(self, *args, **kwargs):
        return self._group.add_argument(*args, **kwargs)

    add_value_provider_argument = add_argument

    def add_argument_group(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return getattr(self._group, name)
