"""Record serialisation: what the fast JSON path writes reads back as what the converting path
writes (keys that collide once written, such as 1 and "1", appear twice in the fast text; a
reader keeps the last, as the conversion does)."""

from __future__ import annotations

import json
import math
import typing

from hypothesis import given
from hypothesis import strategies as st

from pytest_ragbench.records import (
    ANSWER_FIELDS,
    CaseRecord,
    case_outcome,
    dumps_json,
    error_record,
    jsonable,
    make_record,
    record_key,
    relevant_ranks,
)

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


# -- the one constructor -----------------------------------------------------------------------

_TEXT = st.text(max_size=8)
_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_ANSWER = st.fixed_dictionaries({}, optional={
    "answer": st.none() | _TEXT,
    "contexts": st.none() | st.lists(st.tuples(_TEXT, _TEXT), max_size=2),
    "judge": st.none() | st.dictionaries(_TEXT, st.dictionaries(_TEXT, _TEXT, max_size=2),
                                         max_size=2),
    "usage": st.none() | st.fixed_dictionaries({"requests": st.integers(0, 9),
                                                "prompt_tokens": st.integers(0, 99)}),
    "cost": st.none() | st.floats(0, 10),
})


@given(
    suite=_TEXT, retriever=_TEXT, case_id=_TEXT, run=st.integers(0, 5),
    suite_name=st.none() | _TEXT, query=st.none() | _TEXT, tags=st.lists(_TEXT, max_size=3),
    metrics=st.one_of(st.lists(_TEXT, max_size=3),
                      st.dictionaries(_TEXT, st.none() | _FLOAT, max_size=3)),
    n_relevant=st.none() | st.integers(0, 50), no_relevant=st.booleans(),
    error=st.none() | st.fixed_dictionaries({"stage": _TEXT, "type": _TEXT,
                                             "message": _TEXT}),
    answer=st.none() | _ANSWER,
)
def test_any_record_built_round_trips_through_json_with_the_typed_keys(
        suite, retriever, case_id, run, suite_name, query, tags, metrics, n_relevant,
        no_relevant, error, answer):
    rec = make_record(suite=suite, retriever=retriever, case_id=case_id, run=run,
                      suite_name=suite_name, query=query, tags=tags, metrics=metrics,
                      n_relevant=n_relevant, no_relevant=no_relevant, error=error,
                      answer=answer)
    assert type(rec) is dict  # crosses the xdist wire as a plain dict
    back = json.loads(dumps_json(rec))
    assert back == rec  # plain JSON already: NaN and inf were cleaned to None
    required = set(CaseRecord.__required_keys__)
    assert required <= set(rec)
    assert set(rec) - required <= set(CaseRecord.__optional_keys__)
    assert (set(rec) - required == set(ANSWER_FIELDS)) is (answer is not None)
    assert list(rec)[:len(required)] == list(typing.get_type_hints(CaseRecord))[:len(required)]
    assert rec["status"] == ("ok" if error is None else "error")
    assert rec["suite_name"] == (suite if suite_name is None else suite_name)
    assert record_key(back) == (suite, retriever, case_id, run)


def test_error_record_is_built_by_the_constructor():
    rec = error_record(suite="s.yaml", retriever="bm25", case_id="q1", message="worker died",
                       stage="crash")
    assert rec == make_record(suite="s.yaml", retriever="bm25", case_id="q1",
                              error={"stage": "crash", "type": "Error",
                                     "message": "worker died"})
    assert case_outcome(rec) == "error" and rec["metrics"] == {}


def test_valid_strings_replaces_lone_surrogates_and_keeps_clean_data_as_it_is() -> None:
    from pytest_ragbench.records import valid_strings, valid_text

    clean = {"a": ["x", 1, None, ("y", 2.5)], "é": {"k": "ünïcode \U0001f600"}}
    assert valid_strings(clean) is clean
    dirty = {"a\ud800": ["x\udfff", ("\udce9", 1)], "b": {"c": "ok", "d": "\ud83d!"}}
    assert valid_strings(dirty) == {"a\ufffd": ["x\ufffd", ("\ufffd", 1)],
                                    "b": {"c": "ok", "d": "\ufffd!"}}
    assert valid_text("\U0001f600 \ud83d") == "\U0001f600 \ufffd"
    json.dumps(valid_strings(dirty), ensure_ascii=False).encode("utf-8")


def test_relevant_ranks_list_only_relevant_documents_first_by_rank_then_missed_by_grade():
    # a grade of 0 is judged non-relevant; a document listed twice keeps its first rank;
    # the missed ones come as ``missed`` lists them: highest grade first, then by id
    grades = {"d1": 1, "d2": 0, "d3": 2, "a9": 1, "z1": 3, "b2": 1}
    ranks = relevant_ranks(["d2", "d3", "d3", "d1"], grades)
    assert list(ranks.items()) == [("d3", 2), ("d1", 4), ("z1", None), ("a9", None),
                                   ("b2", None)]
