"""Downloads: links are sent the way a browser sends them and named as typed; a link with a login is refused
without showing its password; redirects to file:// and the like, TLS failures, answers that are not HTTP and
bodies cut short are each one sentence of ours (never urllib's, Python's or OpenSSL's words); a gzip or
deflate body is decoded within the size limit.

Every server is local: a ThreadingHTTPServer on 127.0.0.1, or a socket that sends one raw answer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from chatbot.errors import ImageError
from chatbot.image_download import public_url, request_url
from chatbot.images import load_image

REPO = Path(__file__).resolve().parents[1]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
PNG_SHA = hashlib.sha256(PNG).hexdigest()
BOMB = gzip.compress(b"\0" * (21 * 1024 * 1024), compresslevel=9)  # ~20 KB that decode to 21 MB


UTF8_LOCATION = "/pictures/a b ü.png".encode().decode("latin-1")  # UTF-8 bytes, as http.server sends latin-1


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []  # (path, Authorization) of every request, in order

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        routes: dict[str, Callable[[], None]] = {
            "/to-file": lambda: self._send(302, headers={"Location": "file:///etc/passwd"}),
            "/to-data": lambda: self._send(301, headers={"Location": "data:image/png;base64,AAAA"}),
            "/to-bad-port": lambda: self._send(302, headers={"Location": "http://127.0.0.1:abc/x.png"}),
            "/to-spaces": lambda: self._send(302, headers={"Location": UTF8_LOCATION}),
            "/to-login": lambda: self._send(302, headers={"Location": "http://user:pw@127.0.0.1/x.png"}),
            "/gzip": lambda: self._send(200, gzip.compress(PNG), {"Content-Encoding": "gzip"}),
            "/x-gzip": lambda: self._send(200, gzip.compress(PNG), {"Content-Encoding": "x-gzip"}),
            "/deflate": lambda: self._send(200, zlib.compress(PNG), {"Content-Encoding": "deflate"}),
            "/raw-deflate": lambda: self._send(200, _raw_deflate(PNG), {"Content-Encoding": "deflate"}),
            "/gzip-bomb": lambda: self._send(200, BOMB, {"Content-Encoding": "gzip"}),
            "/gzip-cut": lambda: self._send(200, gzip.compress(PNG)[:-30], {"Content-Encoding": "gzip"}),
            "/gzip-garbled": lambda: self._send(200, b"\x1f\x8b\x08\x00garbage" * 4, {"Content-Encoding": "gzip"}),
            "/brotli": lambda: self._send(200, b"\x0b\x02\x80", {"Content-Encoding": "br"}),
        }
        route = self.path.split("?", 1)[0]
        if route in routes:
            routes[route]()
        elif self.path.startswith("/pictures/"):
            self._send(200, PNG, {"Content-Type": "image/png"})
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _refused(url: str) -> str:
    """The one line that loading `url` fails with."""
    with pytest.raises(ImageError) as info:
        load_image(url)
    text = str(info.value)
    assert "\n" not in text and info.value.hint
    return text


# --- bug 1: spaces and non-ASCII characters ------------------------------------------------------------


@pytest.mark.parametrize(("typed", "sent"), [
    ("/pictures/a b ü.jpg", "/pictures/a%20b%20%C3%BC.jpg"),
    ("/pictures/ü.jpg", "/pictures/%C3%BC.jpg"),
    ("/pictures/a%20b.jpg", "/pictures/a%20b.jpg"),  # an escape already there stays as it is
    ("/pictures/x.png?name=ü ö&size=2", "/pictures/x.png?name=%C3%BC%20%C3%B6&size=2"),
    ("/pictures/a\"<b>.png#top", "/pictures/a%22%3Cb%3E.png"),  # the fragment is not sent
])
def test_a_link_is_sent_percent_encoded_and_named_as_typed(server: str, typed: str, sent: str) -> None:
    _Handler.seen.clear()
    loaded = load_image(f"http://{server}{typed}")
    assert loaded.source == f"http://{server}{typed}"  # as the user typed it, in sessions and --json
    assert loaded.sha256 == PNG_SHA
    assert _Handler.seen == [(sent, None)]


def test_request_url_sends_what_a_browser_sends() -> None:
    assert request_url("HTTP://Bücher.Example:8080/a b?q=ü#frag") == "http://xn--bcher-kva.example:8080/a%20b?q=%C3%BC"
    assert request_url("  http://example.com  ") == "http://example.com/"
    assert request_url("http://exa\tmple.com/a\nb.jpg") == "http://example.com/ab.jpg"  # as browsers drop them
    assert request_url("http://[::1]:81/%7e/a~b") == "http://[::1]:81/%7e/a~b"


@pytest.mark.parametrize(("url", "why"), [
    ("http:///a.jpg", "it has no host name"),
    ("https://", "it has no host name"),
    ("http://127.0.0.1:abc/a.jpg", "its port is not a number from 1 to 65535"),
    ("http://127.0.0.1:99999/a.jpg", "its port is not a number from 1 to 65535"),
    ("http://a..b/a.jpg", "its host name is not valid"),
    ("http://exa mple.com/a.jpg", "its host name is not valid"),
    ("http://[::1/a.jpg", "its host name is not valid"),
    (f"http://{'a' * 64}.com/a.jpg", "its host name is not valid"),
])
def test_a_link_that_cannot_be_sent_is_one_sentence(url: str, why: str) -> None:
    assert _refused(url) == (f"{url} is not a valid link: {why}. "
                             "Check the link; a picture's link looks like https://example.com/picture.jpg.")


# --- bug 2: a user name or password in the link ---------------------------------------------------------


@pytest.mark.parametrize(("login", "masked", "what"), [
    ("user:s3cret", "user:***", "a password"),
    ("user:s3c:r@t", "user:***", "a password"),
    ("s3cret-token", "***", "a user name"),
])
def test_a_link_with_a_login_is_refused_without_its_password(server: str, login: str, masked: str,
                                                              what: str) -> None:
    _Handler.seen.clear()
    text = _refused(f"http://{login}@{server}/pictures/a.png")
    assert text == (f"http://{masked}@{server}/pictures/a.png holds {what}, and blip2-chat does not send user names "
                    "or passwords in links. Download the picture and open the file.")
    assert "s3c" not in text
    assert _Handler.seen == []  # refused before anything was sent


def test_public_url_masks_only_the_login() -> None:
    assert public_url("https://me:pw@host:8/a@b.png?x=@") == "https://me:***@host:8/a@b.png?x=@"
    assert public_url("https://host/a@b.png") == "https://host/a@b.png"
    assert public_url("ftp://me:pw@host/a.png") == "ftp://me:***@host/a.png"
    assert public_url("not a link") == "not a link"


def test_caption_refuses_a_link_with_a_password_before_anything_shows_it(server: str, tmp_path: Path) -> None:
    env = {**os.environ, "BLIP2_CHAT_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "chatbot", "caption", "--model", "demo", "--json", f"http://user:s3cret@{server}/a.png"],
        capture_output=True, text=True, encoding="utf-8", env=env, cwd=REPO, timeout=120, check=False,
    )
    assert run.returncode == 2 and "s3cret" not in run.stdout  # --json's record of the refusal names it masked
    assert json.loads(run.stdout)["image"] == f"http://user:***@{server}/a.png"
    assert "s3cret" not in run.stderr and f"http://user:***@{server}/a.png holds a password" in run.stderr
    assert "Traceback" not in run.stderr
    assert not list(tmp_path.rglob("*.json"))  # no session or other file keeps it


# --- bug 3: redirects to what is not an http(s) link ----------------------------------------------------


@pytest.mark.parametrize(("route", "target"), [
    ("/to-file", "file:///etc/passwd"),
    ("/to-data", "data:image/png;base64,AAAA"),
])
def test_a_redirect_to_another_scheme_is_our_sentence(server: str, route: str, target: str) -> None:
    assert _refused(f"http://{server}{route}") == (
        f"http://{server}{route} redirects to {target}, which is not an http(s) link. "
        "Use a direct http:// or https:// link to the image.")


def test_a_redirect_names_the_link_as_typed(server: str) -> None:
    text = _refused(f"http://{server}/to-file?ü")
    assert text.startswith(f"http://{server}/to-file?ü redirects to file:///etc/passwd, which")


def test_a_redirect_to_a_link_that_cannot_be_sent_is_our_sentence(server: str) -> None:
    assert _refused(f"http://{server}/to-bad-port") == (
        f"http://{server}/to-bad-port redirects to http://127.0.0.1:abc/x.png, which is not a valid link. "
        "Use a direct http:// or https:// link to the image.")


def test_a_redirect_to_a_path_with_spaces_is_followed(server: str) -> None:
    _Handler.seen.clear()
    assert load_image(f"http://{server}/to-spaces").sha256 == PNG_SHA
    assert [path for path, _ in _Handler.seen] == ["/to-spaces", "/pictures/a%20b%20%C3%BC.png"]


def test_a_redirect_to_a_link_with_a_login_is_refused_masked(server: str) -> None:
    assert _refused(f"http://{server}/to-login") == (
        f"http://{server}/to-login redirects to http://user:***@127.0.0.1/x.png, a link with a user name or "
        "password, which blip2-chat does not follow. Use a direct http:// or https:// link to the image.")


# --- bug 4: TLS failures and answers that are no HTTP ----------------------------------------------------


def test_https_to_a_plain_http_server_says_so(server: str) -> None:
    assert _refused(f"https://{server}/pictures/a.png") == (
        f"Could not download https://{server}/pictures/a.png: the server at {server} did not answer as an "
        "https server (an SSL error). Check whether the link should start with http://, or download the image "
        "and pass the file.")


@pytest.fixture(scope="module")
def self_signed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate with")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class _Quiet(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass

    httpd = _Quiet(("127.0.0.1", 0), _Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_certificate_that_fails_verification_is_said_plainly(self_signed_server: str) -> None:
    text = _refused(f"https://{self_signed_server}/pictures/a.png")
    assert text == (f"Could not download https://{self_signed_server}/pictures/a.png: the server's certificate could "
                    "not be verified (it is self-signed). Check the address; if it is right, download the image "
                    "yourself and pass the file.")
    assert "verif" in text and "disabl" not in text and "CERTIFICATE_VERIFY_FAILED" not in text


def _one_answer(answer: bytes) -> str:
    """A socket on 127.0.0.1 that reads one request and sends `answer` raw, then closes; its host:port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}"


CUT_SHORT = "the server closed the connection before the whole image arrived. Try again, or download the image and " \
            "pass the file."
NOT_HTTP = "the server's answer is not valid HTTP. Check the address and your connection, or download the image " \
           "and pass the file."


@pytest.mark.parametrize(("answer", "said"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + PNG[:20], CUT_SHORT),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + PNG[:20], CUT_SHORT),
    (b"HELLO THERE\r\n\r\n", NOT_HTTP),
    (PNG, NOT_HTTP),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", NOT_HTTP),
    (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 120 + b"\r\n", NOT_HTTP),
    (b"", "the server closed the connection without answering. Check the address and your connection, or download "
          "the image and pass the file."),
], ids=["length-cut-short", "chunks-cut-short", "bad-status-line", "no-status-line", "header-too-long",
        "too-many-headers", "closed-at-once"])
def test_an_answer_that_is_no_http_or_cut_short_is_our_sentence(answer: bytes, said: str) -> None:
    url = f"http://{_one_answer(answer)}/a.png"
    assert _refused(url) == f"Could not download {url}: {said}"


# --- bug 5: compressed answers ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/gzip", "/x-gzip", "/deflate", "/raw-deflate"])
def test_a_compressed_answer_is_decoded(server: str, route: str) -> None:
    loaded = load_image(f"http://{server}{route}")
    assert loaded.sha256 == PNG_SHA and loaded.image.size == (40, 30)


def test_a_gzip_bomb_is_refused_at_the_limit_on_decoded_bytes(server: str) -> None:
    assert len(BOMB) < 1024 * 1024
    assert _refused(f"http://{server}/gzip-bomb") == (
        f"http://{server}/gzip-bomb is larger than 20 MB. Download it yourself, shrink it if needed, and pass the "
        "local file.")


@pytest.mark.parametrize("route", ["/gzip-cut", "/gzip-garbled"])
def test_a_damaged_compressed_answer_is_one_sentence(server: str, route: str) -> None:
    assert _refused(f"http://{server}{route}") == (
        f"Could not download http://{server}{route}: the server sent a compressed answer that is damaged or "
        "incomplete. Try again, or download the image in a browser and pass the file.")


def test_a_compression_we_cannot_undo_is_named(server: str) -> None:
    assert _refused(f"http://{server}/brotli") == (
        f"Could not download http://{server}/brotli: the server sent it compressed as 'br', which blip2-chat "
        "cannot undo. Download the image in a browser and pass the file.")
