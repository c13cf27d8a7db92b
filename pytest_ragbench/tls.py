"""The certificate store every HTTP client of the package verifies servers with.

``httpx.AsyncClient()`` builds an SSL context of its own, loading the whole CA bundle (about
20 ms each), for every client: an LLM, its judge, an embedder, a retriever or a pipeline
behind HTTP, in every process. One context verifies as well as many (an ``SSLContext`` is
made to be shared between connections and threads), so the clients share it.
"""

from __future__ import annotations

import functools
import os
import ssl

import httpx


def default_ssl_context() -> ssl.SSLContext:
    """The context ``httpx`` would build for ``verify=True`` with the environment as it is now
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's bundle), built once per setting."""
    return _context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # the arguments are the cache key only: httpx reads the same variables itself
    return httpx.create_ssl_context()
