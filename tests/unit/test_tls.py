"""The HTTP clients share one certificate store per environment setting."""

from __future__ import annotations

import asyncio
import ssl

import certifi

from pytest_ragbench.llm.openai import OpenAIChat
from pytest_ragbench.tls import default_ssl_context


def test_one_context_per_setting_of_the_environment(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    default = default_ssl_context()
    assert isinstance(default, ssl.SSLContext)
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    assert default_ssl_context() is default
    # a CA file named by the environment is read as httpx reads it, into a context of its own
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    own = default_ssl_context()
    assert own is not default and own.verify_mode == ssl.CERT_REQUIRED
    monkeypatch.delenv("SSL_CERT_FILE")
    assert default_ssl_context() is default


def test_an_llm_client_verifies_with_the_shared_context():
    llm = OpenAIChat("https://llm.example.invalid/v1", "m")
    try:
        pool = llm._client._transport._pool  # httpx's connection pool
        assert pool._ssl_context is default_ssl_context()
    finally:
        asyncio.run(llm.aclose())
