"""The HTTP clients share one certificate store per environment setting, and a client of an
``http://`` endpoint loads none."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import ssl
import subprocess
import threading

import certifi
import httpx
import pytest

from pytest_ragbench import tls
from pytest_ragbench.llm.openai import OpenAIChat
from pytest_ragbench.pipelines.http import HTTPPipeline
from pytest_ragbench.retrievers.http import HTTPRetriever
from pytest_ragbench.tls import default_ssl_context, ssl_context_for


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


@pytest.mark.parametrize("make", [
    lambda url: OpenAIChat(url, "m")._client,
    lambda url: HTTPRetriever(url=url)._client_for_loop(),
    lambda url: HTTPPipeline(url=url)._client_for_loop(),
], ids=["llm", "retriever", "pipeline"])
def test_a_client_of_an_http_endpoint_loads_no_certificate_bundle(make):
    tls._context_for.cache_clear()
    client = make("http://127.0.0.1:9/v1")
    try:
        context = client._transport._pool._ssl_context
        assert context.cert_store_stats()["x509_ca"] == 0
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert tls._context_for.cache_info().currsize == 0  # the bundle was never read
        secure = make("https://llm.example.invalid/v1")
        try:
            assert secure._transport._pool._ssl_context is default_ssl_context()
            assert default_ssl_context().cert_store_stats()["x509_ca"] > 0
        finally:
            asyncio.run(secure.aclose())
    finally:
        asyncio.run(client.aclose())


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; its URL and the file."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    server.socket = server_side.wrap_socket(server.socket, server_side=True)
    # a short poll: shutdown() waits for the loop to look (0.5 s by default)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", cert
    finally:
        server.shutdown()
        server.server_close()


def test_the_context_of_http_endpoints_trusts_no_server(tls_server):
    url, cert = tls_server
    # the server is sound: a client that trusts its certificate gets the page
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as trusting:
        assert trusting.get(url).text == "ok"
    # used for TLS after all, the context of an http:// endpoint verifies and refuses
    with (httpx.Client(verify=ssl_context_for("http://127.0.0.1/v1")) as client,
          pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED")):
        client.get(url)
