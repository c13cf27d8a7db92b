"""Text analysis for the lexical retrievers.

:class:`Tokenizer` turns text into index terms in these steps, in this order:

1. **Normalise** text containing non-ASCII characters to Unicode NFC (so a precomposed ``é``
   and ``e`` + combining acute are the same term; Lucene does not do this) and **lowercase**
   the whole text with :meth:`str.lower`.
2. **Classify characters.** *Word characters* are what Python's ``re`` calls ``\\w`` in Unicode
   mode (every character for which :meth:`str.isalnum` is true, plus ``_``) and combining marks
   (Unicode general category ``M``: accents in decomposed text, Indic vowel signs, Arabic
   harakat, ...). The right single quotation mark ``'`` (U+2019) is rewritten as the ASCII
   apostrophe ``'`` (U+0027). Every other character (whitespace, punctuation, symbols, emoji,
   controls) is a separator.
3. **Split** into tokens: a token is a maximal run of word characters, where an apostrophe
   with a word character on *both* sides stays inside the token (``don't``, ``o'neil``); any
   other apostrophe is a separator. As the regular expression ``\\w+(?:'\\w+)*`` would read
   with combining marks counted as ``\\w``.
4. **Drop an English possessive**: a trailing ``'s`` is removed (``women's`` -> ``women``),
   as Lucene's ``EnglishPossessiveFilter`` does.
5. **Remove stopwords** (compared with the lowercased, possessive-stripped token, before
   stemming): ``"lucene"`` is Lucene's classic 33-word English set (:data:`LUCENE_STOPWORDS`,
   what ``EnglishAnalyzer`` and hence Anserini use), ``None`` keeps every token, and any
   collection of strings is used as given (lowercased).
6. **Stem** with PyStemmer: ``"porter"`` is Porter's original algorithm (what Lucene's
   ``PorterStemFilter`` and Anserini use), ``"english"`` is Snowball English ("Porter2"),
   ``None`` disables stemming.

Steps 1-6 approximate Lucene's ``EnglishAnalyzer``. The known differences are in step 3:
Lucene's ``StandardTokenizer`` implements Unicode word segmentation (UAX #29), which also keeps
``3.25``, ``31,236`` and ``u.s.a`` as single tokens and emits each CJK ideograph as its own
token, whereas here those are split at the punctuation and a run of ideographs is one token.
On NFCorpus the effect on nDCG@10 is below 0.002.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import Stemmer

# The classic stop set of Lucene's EnglishAnalyzer (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET).
LUCENE_STOPWORDS: frozenset[str] = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
        "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
        "there", "these", "they", "this", "to", "was", "will", "with",
    )
)

#: Stemmer names accepted by :class:`Tokenizer`, mapped to PyStemmer algorithm names.
STEMMERS: tuple[str, ...] = ("porter", "english")

#: Bumped whenever the analysis steps change, so that on-disk indexes built with an older
#: analysis are not reused.
TOKENIZER_VERSION = 1

# A word character after step 2: anything but whitespace, ASCII controls, ASCII punctuation
# and symbols (the apostrophe U+0027 included), so ASCII letters, digits and "_" plus every
# non-ASCII character that survived the separator rewrite.
_WORD_CHAR = r"[^\s\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"
_TOKEN = re.compile(rf"{_WORD_CHAR}+(?:'{_WORD_CHAR}+)*")

#: Marks the end of each text in :meth:`Tokenizer.token_stream`. NUL is a separator (step 2),
#: so it can never be part of a token.
TEXT_BREAK = "\x00"

# For token_stream, which splits with str.split (several times faster than findall): every
# ASCII separator but the apostrophe and NUL becomes a space, and every apostrophe without a
# word character on both sides (one that _TOKEN would not keep) becomes a space beforehand.
# What remains between spaces is then exactly one token or one TEXT_BREAK.
_TO_SPACE = str.maketrans(
    {c: " " for c in range(128) if not re.fullmatch(_WORD_CHAR, chr(c)) and chr(c) not in "'\x00"}
)
_LONE_APOSTROPHE = re.compile(rf"'(?:(?!{_WORD_CHAR})|(?<!{_WORD_CHAR}'))")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def _classify_non_ascii(match: re.Match[str]) -> str:
    run = match.group()
    # Fast path: runs of letters (accented words, CJK, ...) need no per-character look-up.
    if run.isalnum():
        return run
    out = []
    for ch in run:
        if ch.isalnum() or unicodedata.category(ch)[0] == "M":
            out.append(ch)
        elif ch == "\u2019":
            out.append("'")
        else:
            out.append(" ")
    return "".join(out)


class Tokenizer:
    """Lowercase, split, strip possessives, drop stopwords and stem (see the module docs).

    Stems are cached per instance: a corpus repeats the same words many times and PyStemmer's
    own cache is bounded and shared by nothing else, so one dictionary look-up per token beats
    a call into the stemmer.
    """

    __slots__ = ("_stem_cache", "_stemmer", "stemmer", "stopwords", "stopwords_name")

    def __init__(
        self,
        stemmer: str | None = "porter",
        stopwords: str | Iterable[str] | None = "lucene",
    ) -> None:
        if stemmer is not None and stemmer not in STEMMERS:
            raise ValueError(
                f"unknown stemmer {stemmer!r} (expected one of {', '.join(STEMMERS)} or None)"
            )
        self.stemmer = stemmer
        self._stemmer = Stemmer.Stemmer(stemmer) if stemmer is not None else None
        self._stem_cache: dict[str, str] = {}
        if stopwords is None:
            self.stopwords: frozenset[str] = frozenset()
            self.stopwords_name: str | None = None
        elif isinstance(stopwords, str):
            if stopwords != "lucene":
                raise ValueError(
                    f"unknown stopword set {stopwords!r} (expected 'lucene', None or a list "
                    "of words)"
                )
            self.stopwords = LUCENE_STOPWORDS
            self.stopwords_name = "lucene"
        else:
            words = list(stopwords)
            bad = [w for w in words if not isinstance(w, str)]
            if bad:
                raise ValueError(f"stopwords must be strings, got {bad[0]!r}")
            self.stopwords = frozenset(w.lower() for w in words)
            self.stopwords_name = "custom"

    @staticmethod
    def _normalise(text: str) -> str:
        """Steps 1-2: NFC, lowercase, every non-word character a separator or ``'``."""
        if text.isascii():
            return text.lower()
        text = unicodedata.normalize("NFC", text).lower()
        return _NON_ASCII_RUN.sub(_classify_non_ascii, text)

    def words(self, text: str) -> list[str]:
        """Steps 1-4: lowercased tokens with possessives stripped, before stopwords/stemming."""
        return [t[:-2] if t.endswith("'s") else t for t in _TOKEN.findall(self._normalise(text))]

    def token_stream(self, texts: Sequence[str]) -> list[str]:
        """The raw tokens (steps 1-3) of every text, each text followed by :data:`TEXT_BREAK`.

        For indexing many texts at once: a few passes over all of them at C speed instead of
        one call per text. Map each raw token through :meth:`index_term` to get what calling
        the tokenizer on each text gives, ``[self(t) for t in texts]``, with the breaks between.
        """
        sep = f" {TEXT_BREAK} "
        joined = sep.join(texts)
        # str.lower is context-free except for the Greek final sigma, which never occurs in
        # ASCII text; other texts are normalised one by one.
        joined = (
            joined.lower() if joined.isascii() else sep.join(map(self._normalise, texts))
        )
        if joined.count(TEXT_BREAK) != len(texts) - 1:
            # A text contains NUL itself. It is a separator anyway, as is a space.
            joined = sep.join(self._normalise(t).replace(TEXT_BREAK, " ") for t in texts)
        if "'" in joined:
            joined = _LONE_APOSTROPHE.sub(" ", joined)
        stream = joined.translate(_TO_SPACE).split()
        if texts:
            stream.append(TEXT_BREAK)
        return stream

    def index_terms(self, tokens: Sequence[str]) -> list[str | None]:
        """Steps 4-6 for raw tokens of :meth:`token_stream`: the index term of each, ``None``
        for a stopword. Stems are not cached (each token is expected to be new)."""
        words = [t[:-2] if t.endswith("'s") else t for t in tokens]
        stop = self.stopwords
        kept = [w for w in words if w not in stop]
        stems = iter(self._stemmer.stemWords(kept) if self._stemmer is not None else kept)
        return [None if w in stop else next(stems) for w in words]

    def stem(self, words: list[str]) -> list[str]:
        """Stem ``words`` (unchanged when stemming is off), through the per-instance cache."""
        if self._stemmer is None:
            return words
        cache = self._stem_cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            cache.update(zip(missing, self._stemmer.stemWords(missing), strict=True))
        return [cache[w] for w in words]

    def __call__(self, text: str) -> list[str]:
        """The index terms of ``text``, in order, repeated terms repeated."""
        words = self.words(text)
        if self.stopwords:
            stop = self.stopwords
            words = [w for w in words if w not in stop]
        return self.stem(words)

    def tokenize(self, text: str) -> list[str]:
        """Same as calling the tokenizer."""
        return self(text)

    def fingerprint(self) -> dict[str, object]:
        """Everything that determines the output, for cache keys and reports."""
        return {
            "tokenizer_version": TOKENIZER_VERSION,
            "stemmer": self.stemmer,
            "stemmer_library": f"PyStemmer {Stemmer.version()}" if self.stemmer else None,
            "stopwords": self.stopwords_name,
            "stopword_list": sorted(self.stopwords) if self.stopwords_name == "custom" else None,
        }
