"""Who answered: a provider's identity for cache keys and reports, with credentials kept out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def strip_credentials(url: str) -> str:
    """Return ``url`` without ``user:password@`` and without a query string or fragment.

    Query strings are dropped too because some gateways take ``?api-key=...``; the path and
    host are what identify an endpoint.
    """
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literals need their brackets back
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def canonical_json(value: Any) -> str:
    """Serialise ``value`` the same way every time (sorted keys, no spaces, UTF-8 kept)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ProviderId:
    """What identifies a provider's answers: kind, endpoint, model and default parameters.

    Never holds API keys or headers, so it is safe to hash into cache keys and to print.
    ``base_url`` has its credentials stripped on construction; ``params`` are the provider's
    default request parameters (merged under per-call parameters when building cache keys).
    """

    kind: str
    base_url: str = ""
    model: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # frozen dataclass: the normalised values have to be set through object.__setattr__
        object.__setattr__(self, "base_url", strip_credentials(self.base_url))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __hash__(self) -> int:
        # the generated hash would fail on the mapping field; hash its canonical form instead
        return hash(canonical_json(self.as_dict()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "model": self.model,
            "params": dict(self.params),
        }
