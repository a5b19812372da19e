"""Tagged outputs that every runner keeps apart: `(tag, value)` pairs split by filters.

Beam's DaskRunner hands every consumer of a multi-output ParDo all of its outputs, whatever
their tag, and drops what a DoFn emits in `finish_bundle`. The package's DoFns therefore
emit `(tag, value)` pairs from `process` only, and `split_tagged` separates them.

The pairs are typed `Tuple[str, Any]`: Beam infers a DoFn's output type from its code, and a
tuple coder inferred for one tag's values must not be used for another tag's (a dataclass is
no tuple).
"""

from __future__ import annotations

from typing import Any, Tuple

import apache_beam as beam

__all__ = ['Outputs', 'split_tagged']


class Outputs(dict):
    """PCollections by tag, reachable as `outputs.tag` or `outputs['tag']`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Select:
    """Keeps the values of one tag (a picklable callable, not a lambda)."""

    def __init__(self, tag: str):
        self._tag = tag

    def __call__(self, element):
        tag, value = element
        if tag == self._tag:
            yield value


def split_tagged(
    tagged: beam.PCollection, tags, label: str = '', types: dict | None = None
) -> Outputs:
    """Splits a PCollection of `(tag, value)` pairs into one PCollection per tag; `types`
    gives the Beam type hint of a tag's elements (others are `Any`)."""
    prefix = f'{label} ' if label else ''
    tagged.element_type = Tuple[str, Any]
    outputs = Outputs()
    for tag in tags:
        select = beam.FlatMap(_Select(tag))
        if types and tag in types:
            select = select.with_output_types(types[tag])
        outputs[tag] = tagged | f'{prefix}Select {tag}' >> select
    return outputs
