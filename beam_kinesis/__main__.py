"""`python -m beam_kinesis`: the `beam-kinesis` command, for environments without its script."""

from __future__ import annotations

from beam_kinesis.cli import main

if __name__ == '__main__':
    main()
