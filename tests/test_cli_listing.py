"""The component listing's rules (pytest_ragbench.listing): which parameters a suite can set,
and the one-line plain-text description."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ragbench.listing import (
    describe_factory,
    describe_user_params,
    first_sentence,
    plain_text,
)
from pytest_ragbench.registry import BuildContext


class _Client:
    pass


def _factory(
    k: int, name: str = "x", ratio: float | None = None, flag: bool = False,
    words: list[str] | None = None, weights: Mapping[str, float] | None = None,
    spec: Any = None, mode: Literal["a", "b"] = "a", path: Path | None = None,
    pair: tuple[int, ...] = (), plain=3, lambda_: float = 0.3,
    client: _Client | None = None, rng: random.Random | None = None,
    callback: Callable[[str], None] | None = None, items: Sequence[_Client] = (),
    _private: int = 0, cache_dir: Path | None = None, context: BuildContext | None = None,
) -> None:
    """Unused."""


def test_only_parameters_a_suite_file_can_spell_are_listed():
    assert describe_user_params(_factory) == (
        "k, name='x', ratio=None, flag=False, words=None, weights=None, spec=None, mode='a', "
        "path=None, pair=(), plain=3, lambda=0.3"
    )


def test_string_annotations_naming_type_checking_imports_count_as_internal():
    namespace: dict[str, Any] = {}
    exec(  # a module whose annotations cannot be resolved at run time
        "from __future__ import annotations\n"
        "def make(url: str, headers: Mapping[str, str] | None = None,\n"
        "         transport: httpx.AsyncBaseTransport | None = None,\n"
        "         mode: Literal['x', 'y'] = 'x', **extra): ...\n",
        namespace,
    )
    assert describe_user_params(namespace["make"]) == "url, headers=None, mode='x', **extra"


def test_classes_are_described_by_their_init():
    class Thing:
        def __init__(self, size: int = 2, client: _Client | None = None) -> None:
            self.size = size

    assert describe_user_params(Thing) == "size=2"


@pytest.mark.parametrize(("rest", "plain"), [
    ("An :class:`~pytest_ragbench.llm.base.LLM` over ``POST {url}``.", "An LLM over POST {url}."),
    ("Uses :meth:`index` and :py:func:`pkg.mod.run`.", "Uses index() and pkg.mod.run()."),
    ("See :class:`the base <pkg.Base>` and `docs <https://x.org>`_.", "See the base and docs."),
    ("Some **bold**, *emphasis*, a `default role` and 2 * 3.",
     "Some bold, emphasis, a default role and 2 * 3."),
    ("Escaped \\*star\\*.", "Escaped *star*."),
    ("Example::", "Example:"),
])
def test_plain_text_removes_inline_markup(rest, plain):
    assert plain_text(rest) == plain


def test_first_sentence_of_the_first_paragraph_without_fields():
    doc = """Rank fusion, e.g. RRF, over
    other retrievers. More detail here.

    :param k: the constant.
    """
    assert first_sentence(doc) == "Rank fusion, e.g. RRF, over other retrievers."
    assert first_sentence(":param k: only fields\n\nThen prose.") == "Then prose."
    assert first_sentence("nDCG, trec_eval ``ndcg_cut.k``") == "nDCG, trec_eval ndcg_cut.k"
    assert first_sentence("") == ""


def test_describe_factory_reads_the_docstring():
    def f() -> None:
        """Recall at ``k``, trec_eval ``recall.k``.

        Longer text.
        """

    assert describe_factory(f) == "Recall at k, trec_eval recall.k."


_PROSE = st.text(st.characters(blacklist_characters="`*\\:_<>", blacklist_categories=("Cs",)))
_CODE = st.text(st.characters(blacklist_characters="`\\", blacklist_categories=("Cs", "Z", "Cc")),
                min_size=1)


@given(_PROSE)
def test_prose_without_markup_only_has_its_whitespace_normalised(text):
    assert plain_text(text) == " ".join(text.split())


@given(_PROSE, _CODE, st.sampled_from(["class", "func", "py:meth", "attr", "mod"]))
def test_literals_and_roles_leave_no_markup(before, code, role):
    out = plain_text(f"{before} ``{code}`` :{role}:`{code}` {before}")
    assert "``" not in out and f":{role}:" not in out
    assert code.lstrip("~!").split(".")[-1].strip() in out


@given(_PROSE, _CODE)
def test_literal_content_is_kept_verbatim(before, code):
    assert plain_text(f"{before} ``{code}``") == " ".join(f"{before} {code}".split())


class _LocalLLM:
    """A **local** model served by :mod:`llama_cpp`.

    More detail that the listing leaves out.
    """

    def __init__(self, model_path: str, n_ctx: int = 4096, client: _Client | None = None,
                 cache_dir: Path | None = None) -> None:
        pass


class _MyEmbedder:
    """Embeds with ``my-model``; the second sentence is left out."""

    def __init__(self, *, dim: int = 8) -> None:
        pass


class _MyPipeline:
    """The production RAG app, in process."""

    def __init__(self, top: int = 3) -> None:
        pass


def test_pipelines_llms_and_embedders_are_listed_with_plain_lines_and_user_parameters():
    from pytest_ragbench.listing import render_listing
    from pytest_ragbench.registry import Registry

    registry = Registry(use_entry_points=False)
    registry.add("llm", "local", _LocalLLM, origin="conftest conftest.py")
    registry.add("embedder", "mine", _MyEmbedder, origin="conftest conftest.py")
    registry.add("pipeline", "app", _MyPipeline, origin="conftest conftest.py")
    text = "\n".join(line for line, _ in render_listing(registry))
    llms = text[text.index("LLMs (type names"):text.index("embedders (type names")]
    assert ("  local -- conftest conftest.py\n"
            "      parameters: model_path, n_ctx=4096\n"
            "      A local model served by llama_cpp.\n") in llms
    # the built-in openai type lists the keys a suite writes, none of the client's internals
    openai = llms[llms.index("  openai -- built-in"):]
    assert "retries=4, backoff=0.5, rpm=None, tpm=None" in openai
    assert "pool" not in openai and "cost_key" not in openai and "transport" not in openai
    assert ("also takes concurrency, retries, backoff, rpm, tpm, timeout, case_timeout"
            in llms)
    embedders = text[text.index("embedders (type names"):text.index("metrics (type names")]
    assert ("  mine -- conftest conftest.py\n      parameters: dim=8\n"
            "      Embeds with my-model; the second sentence is left out.\n") in embedders
    assert "also takes concurrency, retries" in embedders
    pipelines = text[text.index("pipelines (type names"):text.index("LLMs (type names")]
    assert ("  app -- conftest conftest.py\n      parameters: top=3\n"
            "      The production RAG app, in process.\n") in pipelines
    # a key every system takes (its time limit), which no factory's signature shows
    assert "every type also takes case_timeout" in pipelines
    retrievers = text[:text.index("pipelines (type names")]
    assert "every type also takes case_timeout" in retrievers
