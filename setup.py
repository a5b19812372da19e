"""Packaging for beam-kinesis: the library, the runnable jobs and their console scripts."""

import setuptools

setuptools.setup(
    name='beam-kinesis',
    version='0.1.0',
    description=(
        'Apache Beam batch job that diffs profile snapshots and streams the changed '
        'profiles to Amazon Kinesis, like the AEP Kinesis destination.'
    ),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=setuptools.find_packages(
        include=['beam_kinesis', 'beam_kinesis.*', 'pipelines', 'pipelines.*']
    ),
    include_package_data=True,
    install_requires=[
        'apache-beam>=2.60',
        'boto3>=1.34',
        'fastavro>=1.9',
        'pyarrow>=14',
        'orjson>=3.9',
        # The columnar path encodes checked Parquet rows with polars (beam_kinesis.engine.columnar).
        'polars>=2.1',
        'numpy>=1.24',
        'PyYAML>=6',
    ],
    extras_require={
        # wheel: tests/test_packaging.py builds the wheel without build isolation (offline),
        # and setuptools before 70.1 needs it for bdist_wheel.
        # The embedded local Kinesis (the job's default destination when no stream, endpoint
        # or --output is given) is moto's server: for trying the job, not for production.
        'local': ['moto[kinesis,server]>=5'],
        # The tests run the embedded default too, so they need `local`; matplotlib draws the
        # charts of the HTML run report (--html_report) in its tests.
        'test': [
            'pytest>=8',
            'pytest-xdist>=3.5',
            'duckdb>=1.0',
            'hypothesis>=6.100',
            'wheel',
            'moto[kinesis,server]>=5',
            'matplotlib>=3.7',
        ],
        'dask': ['apache-beam[dask]'],
        'report': ['matplotlib>=3.7'],
    },
    entry_points={
        'console_scripts': [
            'beam-kinesis=beam_kinesis.cli:main',
            # The commands before `beam-kinesis export` / `backfill`, kept as aliases.
            'beam-kinesis-export=pipelines.export_profiles:main',
            'beam-kinesis-backfill=pipelines.backfill:main',
        ],
    },
)
