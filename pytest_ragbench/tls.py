"""The certificate store every HTTP client of the package verifies servers with.

``httpx.AsyncClient()`` builds an SSL context of its own, loading the whole CA bundle (about
20 ms each), for every client: an LLM, its judge, an embedder, a retriever or a pipeline
behind HTTP, in every process. One context verifies as well as many (an ``SSLContext`` is
made to be shared between connections and threads), so the clients share it. A client of an
``http://`` endpoint (a model server on the same machine or network, as most local and test
setups have) makes no TLS connection at all, so its process loads no bundle for it.
"""

from __future__ import annotations

import functools
import os
import ssl
from urllib.parse import urlsplit


def default_ssl_context() -> ssl.SSLContext:
    """The context ``httpx`` would build for ``verify=True`` with the environment as it is now
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's bundle), built once per setting."""
    return _context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def ssl_context_for(url: str) -> ssl.SSLContext:
    """The context for a client whose requests all go to ``url``'s scheme and host.

    ``https://`` (and anything else): :func:`default_ssl_context`. ``http://``: a context
    with no certificate loaded. httpx uses a client's context only for a TLS connection to
    the server it sends to, which an ``http://`` URL never opens (the clients follow no
    redirects), and a proxy's TLS has a context of its own. Should it be used, it still
    checks the host name and requires a certificate, and with nothing to trust it refuses
    every server: no connection goes unverified.
    """
    if urlsplit(url).scheme.lower() == "http":
        return _without_certificates()
    return default_ssl_context()


@functools.lru_cache(maxsize=4)
def _context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    import httpx  # only for an https:// endpoint (see OpenAIChat's client)

    # the arguments are the cache key only: httpx reads the same variables itself
    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=1)
def _without_certificates() -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT starts with CERT_REQUIRED and check_hostname on
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
