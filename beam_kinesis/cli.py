"""`beam-kinesis`: one command for everything a data engineer does with the job.

    beam-kinesis export    diff two snapshots and send the changed profiles (the job)
    beam-kinesis backfill  replay a series of snapshots, pair by pair
    beam-kinesis plan      the diff without sending: what a send would be, and how long
    beam-kinesis check     config, inputs, credentials and stream, each ok or why not
    beam-kinesis policy    the minimal IAM policy for the config's stream
    beam-kinesis convert   a JSON Lines snapshot to Avro or Parquet

Each subcommand is a module function `run(argv) -> int` (the exit status), imported only
when it is asked for: `beam-kinesis convert` should not pay for importing the pipeline, and
a subcommand whose module is not installed (another part of the package) must not break
the others. The old console scripts `beam-kinesis-export` and `beam-kinesis-backfill` stay
as aliases of the first two.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ['COMMANDS', 'PROG', 'Command', 'main', 'run', 'usage']

PROG = 'beam-kinesis'

# Exit status of a command line that cannot be run (the same as a job that cannot start).
EXIT_USAGE = 2


class Command(NamedTuple):
    """A subcommand: where its `run(argv) -> int` lives, and one line saying what it does."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    'export': Command(
        'pipelines.export_profiles',
        'Diff two profile snapshots and send the changed profiles to Kinesis.',
    ),
    'backfill': Command(
        'pipelines.backfill', 'Export an ordered series of snapshots, pair by pair, resumably.'
    ),
    'plan': Command(
        'beam_kinesis.plan',
        'Run the diff without sending: records, bytes, per-shard spread and the '
        'time the send needs at the shard limits.',
    ),
    'check': Command(
        'beam_kinesis.check', 'Check the config, the inputs, the credentials and the stream.'
    ),
    'policy': Command(
        'beam_kinesis.policy', "Print the minimal IAM policy for the config's stream."
    ),
    'convert': Command(
        'beam_kinesis.snapshot_files',
        'Convert a JSON Lines snapshot to Avro or Parquet (or JSON Lines).',
    ),
}


def usage() -> str:
    """The top-level help: the subcommands and where each one's options are listed."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        f'usage: {PROG} COMMAND [options]',
        '',
        'Diff profile snapshots and stream the changed profiles to Amazon Kinesis, like '
        "AEP's Kinesis destination.",
        '',
        'commands:',
    ]
    lines += [f'  {name:<{width}}  {command.summary}' for name, command in COMMANDS.items()]
    lines += [
        '',
        f'`{PROG} COMMAND --help` lists the options of a command, by group (input, '
        'destination, sink, runner).',
        'Exit status: 0 ok; 1 the job failed while running; 2 it could not start (bad '
        'options: one sentence says why); 3 done with dead letters; 4 the input ledger '
        'did not balance.',
    ]
    return '\n'.join(lines)


def _error(message: str) -> int:
    print(f'{PROG}: {message}', file=sys.stderr)
    return EXIT_USAGE


def _load(name: str) -> Callable[..., int] | None:
    """The subcommand's `run`, or None when its module is not part of this installation."""
    module_name = COMMANDS[name].module
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise  # the module is there but something it imports is not: a real error
        return None
    return getattr(module, 'run', None)


def run(argv: Sequence[str] | None = None) -> int:
    """Dispatches `argv` (without the program name) to a subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(usage())
        return 0 if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        hint = f' (did you mean {close[0]}?)' if close else ''
        what = 'option' if name.startswith('-') else 'command'
        return _error(
            f'{name!r} is not a {what} of {PROG}{hint}; the commands are '
            f'{", ".join(COMMANDS)} (see {PROG} --help).'
        )
    command = _load(name)
    if command is None:
        return _error(
            f'the {name} command is not part of this installation (the module '
            f'{COMMANDS[name].module} is missing).'
        )
    prog = f'{PROG} {name}'
    # A subcommand that names itself in its messages gets the name it was called by.
    if 'prog' in inspect.signature(command).parameters:
        return command(rest, prog=prog)
    return command(rest)


def main() -> None:
    """Console-script entry point (`beam-kinesis`)."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    sys.exit(run(sys.argv[1:]))


if __name__ == '__main__':
    main()
