"""How the xdist controller deals ragbench cases to its workers (scheduling.deal)."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from pytest_ragbench.scheduling import deal, query_of


def ids(suites: dict[str, tuple[list[str], list[str], int]]) -> list[str]:
    """Node ids in collection order: per suite, per system, per query, per repetition."""
    return [f"{suite}::{system}::{q if runs == 1 else f'{q}[run{r}]'}"
            for suite, (systems, queries, runs) in suites.items()
            for system in systems for q in queries for r in range(runs)]


def test_a_case_asks_its_query_whatever_the_suite_system_or_repetition() -> None:
    assert query_of("suite.yaml::bm25::q1") == "q1"
    assert query_of("sub/s.yaml::dense::q1[run2]") == "q1"
    # only the repetition suffix goes; the rest of an odd id stays
    assert query_of("s.yaml::a::what[is]::this") == "what[is]::this"
    assert query_of("s.yaml::a::x[run]") == "x[run]"


def test_the_cases_of_a_query_go_to_one_worker_queries_in_turn() -> None:
    # two systems, five queries: in turn by case, a::q1 and b::q1 went to different workers
    nodeids = ids({"s.yaml": (["a", "b"], ["q1", "q2", "q3", "q4", "q5"], 1)})
    shares = deal(nodeids, 2)
    assert [[nodeids[i] for i in share] for share in shares] == [
        ["s.yaml::a::q1", "s.yaml::a::q3", "s.yaml::a::q5",
         "s.yaml::b::q1", "s.yaml::b::q3", "s.yaml::b::q5"],
        ["s.yaml::a::q2", "s.yaml::a::q4", "s.yaml::b::q2", "s.yaml::b::q4"],
    ]


def test_a_big_query_does_not_take_the_next_ones_too() -> None:
    # q1 has three cases (three systems answer it in one suite), the others one each
    nodeids = ["s.yaml::a::q1", "s.yaml::b::q1", "s.yaml::c::q1",
               "t.yaml::a::q2", "t.yaml::a::q3", "t.yaml::a::q4", "t.yaml::a::q5"]
    assert deal(nodeids, 2) == [[0, 1, 2, 6], [3, 4, 5]]


def test_the_queries_of_the_last_cases_go_to_one_worker() -> None:
    # ten queries, repeated twice: the last four cases are q9 and q10's (their runs
    # together); q1..q8 are dealt in turn
    queries = [f"q{i}" for i in range(1, 11)]
    nodeids = ids({"s.yaml": (["a"], queries, 2)})
    shares = [[nodeids[i] for i in share] for share in deal(nodeids, 2, tail=4)]
    turn = {w: [f"s.yaml::a::q{i}[run{r}]" for i in range(1 + w, 9, 2) for r in (0, 1)]
            for w in (0, 1)}
    tail = [f"s.yaml::a::q{i}[run{r}]" for i in (9, 10) for r in (0, 1)]
    # the tail goes to the worker with the fewest cases once the others are dealt: a tie
    # here, so the one dealt to longest ago (the first)
    assert shares == [turn[0] + tail, turn[1]]
    assert deal(nodeids, 2, tail=0) == deal(nodeids, 2)
    # a window that cuts a query's runs in two (q9's) leaves that query to be dealt in turn:
    # q10 alone is the tail, to the worker with the fewest cases (the second)
    assert deal(nodeids, 2, tail=3) == [[i for i in range(20) if i // 2 in (0, 2, 4, 6, 8)],
                                        [i for i in range(20) if i // 2 in (1, 3, 5, 7, 9)]]


def test_a_query_with_cases_before_the_last_ones_is_dealt_in_turn() -> None:
    # two systems: the last cases are b's, and their queries' a cases come much earlier;
    # handed to one worker, the "tail" took most of the suite
    nodeids = ids({"s.yaml": (["a", "b"], [f"q{i}" for i in range(1, 11)], 1)})
    assert deal(nodeids, 2, tail=4) == deal(nodeids, 2)


@given(
    suites=st.dictionaries(
        st.sampled_from(["s.yaml", "t.yaml", "sub/u.yaml"]),
        st.tuples(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True),
                  st.lists(st.sampled_from([f"q{i}" for i in range(12)]), min_size=1,
                           max_size=12, unique=True),
                  st.integers(1, 3)),
        min_size=1),
    workers=st.integers(1, 6),
    tail=st.integers(0, 8),
)
def test_every_case_dealt_once_in_order_by_query_and_balanced(
        suites: dict[str, tuple[list[str], list[str], int]], workers: int, tail: int) -> None:
    nodeids = ids(suites)
    shares = deal(nodeids, workers, tail)
    assert len(shares) == workers
    assert sorted(i for share in shares for i in share) == list(range(len(nodeids)))
    assert all(share == sorted(share) for share in shares)  # each worker: pytest order
    owners: dict[str, set[int]] = defaultdict(set)
    for w, share in enumerate(shares):
        for i in share:
            owners[query_of(nodeids[i])].add(w)
    assert all(len(o) == 1 for o in owners.values())
    # the queries whose cases are all among the last `tail`: all with one worker, and no
    # more cases than that
    window = max(0, len(nodeids) - tail)
    last = {q for q in owners
            if all(i >= window for i, n in enumerate(nodeids) if query_of(n) == q)}
    assert len({w for q in last for w in owners[q]}) <= 1
    assert sum(1 for n in nodeids if query_of(n) in last) <= tail
    # the others balanced (the tail's owner had the fewest of them)
    sizes = [sum(1 for i in share if query_of(nodeids[i]) not in last) for share in shares]
    others = [q for q in owners if q not in last]
    largest = max((sum(1 for n in nodeids if query_of(n) == q) for q in others), default=0)
    assert max(sizes) - min(sizes) <= largest
    if last:
        owner = next(w for q in last for w in owners[q])
        assert sizes[owner] == min(sizes)
