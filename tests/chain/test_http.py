"""The RPC pool's keep-alive transport against a real HTTP/1.1 server on a socket: connection reuse,
a kept-alive connection the server dropped, credentials in the URL, timeouts."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.chain.http import JsonPoster, TransportError


class Server:
    """Echoes each JSON body back with the request's Authorization header; counts connections and
    requests. `close_after_answer`: drop the connection after answering while advertising keep-alive
    (what an idle timeout on the server side looks like to the client's next request)."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1"):
        self.connections = 0
        self.requests: list[dict] = []
        self.close_after_answer = False
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                server.connections += 1

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                time.sleep(server.delay)
                data = json.dumps({"echo": body, "auth": self.headers.get("Authorization")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                if server.close_after_answer:
                    self.close_connection = True

        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        self._server = server_class((host, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.port = self._server.server_address[1]

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/rpc"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_successive_posts_share_one_connection(server):
    poster = JsonPoster()
    answers = [poster.post(server.url(), {"n": i}, timeout=5).json()["echo"] for i in range(20)]
    assert answers == [{"n": i} for i in range(20)]
    assert server.connections == 1


def test_a_kept_alive_connection_the_server_dropped_is_reopened_and_the_request_sent_once(server):
    poster = JsonPoster()
    server.close_after_answer = True
    assert poster.post(server.url(), {"n": 1}, timeout=5).status == 200
    time.sleep(0.05)  # the server has closed its end
    assert poster.post(server.url(), {"n": 2}, timeout=5).json()["echo"] == {"n": 2}
    assert server.requests == [{"n": 1}, {"n": 2}]
    assert server.connections == 2


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_errors(server):
    poster = JsonPoster()
    answer = poster.post(server.url("alice:s3cret@"), {}, timeout=5).json()
    assert answer["auth"] == "Basic YWxpY2U6czNjcmV0"  # base64("alice:s3cret")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(TransportError) as caught:
        poster.post(f"http://alice:s3cret@127.0.0.1:{closed}/", {}, timeout=2)
    assert "ConnectionRefusedError" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_an_answer_slower_than_the_timeout_is_a_transport_error(server):
    server.delay = 1.0
    poster = JsonPoster()
    started = time.monotonic()
    with pytest.raises(TransportError, match="timed out"):
        poster.post(server.url(), {}, timeout=0.2)
    assert time.monotonic() - started < 0.9
    server.delay = 0.0
    assert poster.post(server.url(), {"after": True}, timeout=5).json()["echo"] == {"after": True}


def test_a_url_that_is_not_http_is_refused_by_name():
    with pytest.raises(TransportError, match="not an http"):
        JsonPoster().post("ws://127.0.0.1:1/", {}, timeout=1)


def test_an_ipv6_literal_endpoint_with_a_port_is_reached():
    server = Server(socket.AF_INET6, "::1")
    try:
        answer = JsonPoster().post(f"http://[::1]:{server.port}/rpc", {"v6": True}, timeout=5)
        assert answer.json()["echo"] == {"v6": True}
    finally:
        server.close()


def test_a_port_that_is_not_a_number_is_refused_as_a_transport_error():
    with pytest.raises(TransportError, match="not a valid URL"):
        JsonPoster().post("http://127.0.0.1:eighty/", {}, timeout=1)


def test_an_https_endpoint_whose_certificate_does_not_verify_is_refused(tmp_path):
    """TLS is verified (against certifi's bundle): a self-signed endpoint is a transport error, not
    an answer."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: S603
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server._server.socket = context.wrap_socket(server._server.socket, server_side=True)
    try:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            JsonPoster().post(f"https://127.0.0.1:{server.port}/rpc", {}, timeout=5)
    finally:
        server.close()
