"""What an endpoint's URL and extra HTTP headers may hold, and their ``${NAME}`` references.

The OpenAI-compatible endpoints (``llm``, ``judge``, ``embedder``), the ``http`` retriever
and the ``http`` pipeline take a URL and extra headers. A URL without scheme or host, or a
header an HTTP client refuses to send, failed every case's request at run time (after its
retries), so the suite loader and the components' checks use these before any request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ParamValueError

#: A ``${NAME}`` reference to an environment variable inside a header value.
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: An environment variable's name as a shell exports it.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: RFC 9110's token: the characters a header name may hold.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_http_url(url: Any) -> bool:
    """Whether ``url`` is an ``http(s)://`` URL with a host (and a valid port, if any)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket
        return False
    if parts.scheme not in ("http", "https") or any(c.isspace() for c in parts.netloc):
        return False
    try:
        _ = parts.port  # raises for a port out of range or not a number
    except ValueError:
        return False
    return bool(parts.hostname)


def shown_url(url: str) -> str:
    """``url`` for a message: its ``user:password@`` part (basic auth) masked."""
    return _USERINFO.sub("//***@", url)


_USERINFO = re.compile(r"//[^/?#]*@")


def header_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an HTTP header's name (None: it can)."""
    if _TOKEN.fullmatch(name):
        return None
    return f"{name!r} is not a valid header name (letters, digits and !#$%&'*+.^_`|~- only)"


def header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header's value (None: it can).

    The message never quotes the value, which may be a secret.
    """
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        return "holds a control character (a line break?)"
    if not value.isascii():
        return "holds a letter outside ASCII (HTTP clients send header values as bytes)"
    if value != value.strip(" \t"):
        return "starts or ends with a space or tab (a pasted key's?)"
    return None


def url_and_header_problems(url: Any, headers: Any) -> list[ParamValueError]:
    """What is wrong with ``url`` (an http(s) URL with a host) and ``headers`` (a mapping of
    valid header names to values, text or numbers, a client can send): every problem, each
    a :class:`~pytest_ragbench.errors.ParamValueError` naming its key."""
    problems: list[ParamValueError] = []
    if not is_http_url(url):
        shown = repr(shown_url(url)) if isinstance(url, str) else repr(url)
        detail = f"must be an http(s) URL with a host, got {shown}"
        problems.append(ParamValueError(f"url {detail}", path=("url",), detail=detail))
    if headers is None:
        return problems
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
            for k, v in headers.items()):
        detail = "must be a mapping of header names to strings"
        return [*problems, ParamValueError(f"headers {detail}", path=("headers",),
                                           detail=detail)]
    for name, value in headers.items():
        problem = header_name_problem(name)
        if problem:
            problems.append(ParamValueError(f"headers: {problem}", path=("headers",),
                                            detail=problem))
            continue
        problem = header_value_problem(str(value))
        if problem:
            problems.append(ParamValueError(f"headers.{name}: the value {problem}",
                                            path=("headers", name),
                                            detail=f"the value {problem}"))
    return problems


def check_url_and_headers(url: Any, headers: Any) -> None:
    """ValueError (a :class:`~pytest_ragbench.errors.ParamValueError` naming each key at
    fault) unless ``url`` and ``headers`` are as :func:`url_and_header_problems` wants."""
    problems = url_and_header_problems(url, headers)
    if problems:
        raise ParamValueError.combine(problems)


def unset_env_message(name: str) -> str:
    """Why the variable ``name`` gives no key, showing ``name`` only when it reads as a
    variable's name: a key pasted where its variable's name belongs (``api_key_env: sk-...``)
    is unset as a name, and the message would have shown the secret itself."""
    if _ENV_NAME.fullmatch(name) and (len(name) < 32 or name == name.upper()):
        return f"environment variable {name} is not set or empty"
    return ("the environment variable it names is not set or empty (the name is not shown: "
            "it does not read as a variable's name, such as OPENAI_API_KEY, and may be the "
            "key itself)")


def env_value(name: str, where: str) -> str:
    """The value of environment variable ``name`` for a header; ValueError naming ``where``
    when it is unset, empty or holds what a header cannot (never showing the value)."""
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{where}: {unset_env_message(name)}")
    problem = header_value_problem(value)
    if problem:
        raise ValueError(f"{where}: environment variable {name} {problem}, which an HTTP "
                         f"header cannot send")
    return value


def expand_env(value: str, where: str) -> tuple[str, list[str]]:
    """``value`` with ``${NAME}`` replaced from the environment, and the substituted values
    (secrets, for redaction); ValueError as :func:`env_value` raises it."""
    used: list[str] = []

    def sub(match: re.Match[str]) -> str:
        env = env_value(match.group(1), where)
        used.append(env)
        return env

    return ENV_REF.sub(sub, value), used
