"""Record serialisation: what the fast JSON path writes reads back as what the converting path
writes (keys that collide once written, such as 1 and "1", appear twice in the fast text; a
reader keeps the last, as the conversion does)."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from pytest_ragbench.records import dumps_json, jsonable

KEYS = st.one_of(st.text(max_size=5), st.booleans(), st.none(), st.integers(),
                 st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
              st.floats(allow_nan=True, allow_infinity=True)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=12,
)


@given(VALUES)
def test_dumps_json_reads_back_as_converting_first(value):
    expected = json.loads(json.dumps(jsonable(value), allow_nan=False))
    assert json.loads(dumps_json(value)) == expected


def test_keys_read_as_json_writes_them_and_non_finite_values_become_null():
    assert json.loads(dumps_json({True: 1, None: 2, 3: 4, 1.5: 5, "s": math.nan})) == {
        "true": 1, "null": 2, "3": 4, "1.5": 5, "s": None}
