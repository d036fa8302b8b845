"""Fetching an image over http(s): one deadline for the whole download, a size limit, redirects only to
http(s), and a cancel check, so a slow or hostile server can neither keep the caller waiting for ever
nor send more than MAX_DOWNLOAD_BYTES. Every problem is one `ImageError` sentence.

A link is sent the way a browser sends it (spaces and non-ASCII characters percent-encoded, a non-ASCII
host name in IDNA), while messages name it as it was typed. A link holding a user name or password is
refused before anything is sent, and shown with its login masked (`public_url`). A gzip or deflate body
is decoded, within the same size limit counted on the decoded bytes.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from typing import IO
from urllib.parse import quote, urljoin, urlsplit, urlunsplit
from urllib.request import Request

from chatbot import __version__
from chatbot.errors import ImageError
from chatbot.untrusted import visible

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
# The whole download, from the DNS look-up to the last byte, and also the limit for each socket
# operation: a server that drips a byte every few seconds never trips a per-read timeout alone.
DOWNLOAD_TIMEOUT_S: float = 15
CANCEL_POLL_S = 0.1  # how often a waiting download asks its `cancel` check


# What an address is: `scheme://...`, its scheme a letter, then letters, digits, + . or -: two characters at least,
# so a Windows drive (`C://photos/a.jpg`) stays a path. One rule for reading a source, a typed line and a PATH.
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]+://"
_ADDRESS_START = re.compile(_SCHEME)
_ADDRESS = re.compile(_SCHEME + r"\S+")  # an address anywhere in a line, up to the next space


def address_scheme(text: str) -> str | None:
    """The scheme of `text`, lower case (`https`, `s3`), when `text` (spaces around it aside) is an address
    (`scheme://...`); None for anything else, a path."""
    match = _ADDRESS_START.match(text.strip())
    return match.group()[:-3].lower() if match else None


def is_address(text: str) -> bool:
    """Whether `text` is an address (`scheme://...`, any scheme) rather than a path."""
    return address_scheme(text) is not None


def is_url(text: str) -> bool:
    """True for http:// and https:// addresses (the only schemes we fetch)."""
    return address_scheme(text) in ("http", "https")


def one_line(text: str) -> str:
    """Free text from outside (a server's reason, an OS message) as one clean line for a message.

    Runs of whitespace, line breaks included, become one space (urllib's redirect-loop reason spans
    three lines), and any other control character is shown by `visible`. Names and URLs go through
    `visible` alone: their spaces are part of them.
    """
    return visible(" ".join(text.split()))


def public_url(url: str) -> str:
    """`url` as typed, with any login in it masked: `http://user:***@host/a.jpg`, and `http://***@host/a.jpg`
    for a user name alone (some sites take a token as the user name). Not made visible: callers do that."""
    login, host_start = _login(url)
    if login is None:
        return url
    user, colon, _ = login.partition(":")
    return f"{url[:host_start - len(login) - 1]}{f'{user}:***' if colon else '***'}@{url[host_start:]}"


def without_logins(text: str) -> str:
    """`text` with the login of every address in it masked as `public_url` masks one (`/image https://bob:***@x/a`):
    what is kept of a typed line (the Up arrow's history file) never holds a password."""
    return _ADDRESS.sub(lambda match: public_url(match.group()), text)



def _login(url: str) -> tuple[str | None, int]:
    """The `user:password` of `scheme://user:password@host/...` (None when there is none), and where the
    host starts. The host part ends where urllib ends it, at the first / ? or #, and the login at its last @."""
    start = url.find("://")
    if start < 0:
        return None, 0
    start += 3
    end = next((i for i, char in enumerate(url[start:], start) if char in "/?#"), len(url))
    at = url.rfind("@", start, end)
    return (url[start:at], at + 1) if at >= 0 else (None, 0)


# What a path or query keeps as it is (RFC 3986's delimiters, and % so that existing %XX escapes stay);
# everything else, spaces, controls and non-ASCII characters among it, is percent-encoded as UTF-8.
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = _PATH_SAFE + "?"
_HOST = re.compile(r"[A-Za-z0-9._-]+")


def request_url(url: str) -> str:
    """The link to send for `url`, as a browser would send it: tabs and line breaks dropped, the path and
    query percent-encoded (existing %XX escapes kept), a non-ASCII host name in IDNA, the fragment left off.

    ImageError, naming the link as typed, for a link holding a user name or password (never sent, and its
    password never shown) and for one without a usable host name or port.
    """
    typed = url.strip()
    shown = visible(typed)
    login, _ = _login(typed)
    if login is not None:  # refused before anything else, so that no message shows its password
        what = "a password" if ":" in login else "a user name"
        raise ImageError(
            f"{visible(public_url(typed))} holds {what}, and blip2-chat does not send user names or passwords "
            "in links.",
            "Download the picture and open the file.",
        )
    hint = "Check the link; a picture's link looks like https://example.com/picture.jpg."
    bad_host = ImageError(f"{shown} is not a valid link: its host name is not valid.", hint)
    try:
        parts = urlsplit("".join(char for char in typed if char not in "\t\r\n"))  # as browsers drop them
    except ValueError:  # "Invalid IPv6 URL"
        raise bad_host from None
    try:
        port = parts.port
    except ValueError:  # out of range, or no number
        port = 0
    if port == 0:
        raise ImageError(f"{shown} is not a valid link: its port is not a number from 1 to 65535.", hint)
    host = parts.hostname or ""
    if not host:
        raise ImageError(f"{shown} is not a valid link: it has no host name.", hint)
    try:
        if ":" in host:  # an IPv6 address, written in brackets
            ipaddress.IPv6Address(host.split("%", 1)[0])
            host = f"[{host}]"
        else:
            ascii_host = host.encode("idna").decode("ascii")  # what http.client would do, failing here instead
            if not _HOST.fullmatch(ascii_host):
                raise ValueError(ascii_host)
            host = ascii_host
    except (UnicodeError, ValueError):
        raise bad_host from None
    netloc = host if port is None else f"{host}:{port}"
    path = quote(parts.path, safe=_PATH_SAFE) or "/"
    return urlunsplit((parts.scheme.lower(), netloc, path, quote(parts.query, safe=_QUERY_SAFE), ""))


def _seconds(value: float) -> str:
    """15 -> "15", 0.3 -> "0.3": a timeout as the user would write it."""
    return f"{value:g}"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) links without a login, so a link cannot bounce us to ftp:// or
    file://. `names` maps a link we send to how messages name it (the first one: as the user typed it)."""

    _HINT = "Use a direct http:// or https:// link to the image."

    def __init__(self, names: dict[str, str]) -> None:
        super().__init__()
        self.names = names

    def http_error_302(  # noqa: PLR0913 - the signature is urllib's
        self, req: Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage
    ) -> IO[bytes] | None:
        # urllib refuses file:// and other schemes here, in its own words, before redirect_request is asked
        target = headers.get("location") or headers.get("uri")
        if target:
            try:
                newurl = urljoin(req.full_url, target.strip())
            except ValueError:  # "Invalid IPv6 URL"
                newurl = target.strip()
            try:
                self._check(req, newurl)
                try:
                    request_url(newurl)  # a host or port that urllib would fail on in its own words
                except ImageError:
                    raise ImageError(f"{self._name(req)} redirects to {visible(newurl)}, which is not a valid link.",
                                     self._HINT) from None
            except ImageError:
                fp.close()
                raise
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(  # noqa: PLR0913 - the signature is urllib's
        self, req: Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage, newurl: str
    ) -> Request | None:
        self._check(req, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)

    def _name(self, req: Request) -> str:
        return self.names.get(req.full_url) or visible(req.full_url)

    def _check(self, req: Request, newurl: str) -> None:
        """ImageError unless `newurl` is an http(s) link without a user name or password."""
        if not is_url(newurl):
            raise ImageError(
                f"{self._name(req)} redirects to {visible(public_url(newurl))}, which is not an http(s) link.",
                self._HINT,
            )
        if _login(newurl)[0] is not None:
            raise ImageError(
                f"{self._name(req)} redirects to {visible(public_url(newurl))}, a link with a user name or "
                "password, which blip2-chat does not follow.",
                self._HINT,
            )


class _Decoder:
    """Undoes a body's gzip or deflate Content-Encoding as it arrives, never making more than it is allowed
    (a few kilobytes of gzip can hold gigabytes). Deflate comes with zlib's header or, from some servers,
    without: the first two bytes tell."""

    def __init__(self, encoding: str) -> None:
        self.gzip = encoding == "gzip"
        self.zlib = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None
        self.pending = b""  # deflate: the first bytes, until there are two to tell its kind by

    def decode(self, data: bytes, room: int) -> bytes:
        """The decoded bytes of `data`, at most `room` (at least 1) of them; zlib.error for a damaged body."""
        if self.zlib is None:
            self.pending += data
            if len(self.pending) < 2:
                return b""
            wrapped = self.pending[0] & 0x0F == 8 and int.from_bytes(self.pending[:2], "big") % 31 == 0
            self.zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self.pending = self.pending, b""
        return self.zlib.decompress(data, room)  # whatever did not fit stays in unconsumed_tail

    @property
    def complete(self) -> bool:
        """Whether the compressed stream ended properly (and was not cut short)."""
        return self.zlib is not None and self.zlib.eof


def _decoder(shown: str, headers: http.client.HTTPMessage) -> _Decoder | None:
    """The decoder for the answer's Content-Encoding, None for none; ImageError for one we cannot undo."""
    codings = [c.strip().lower() for field in headers.get_all("Content-Encoding") or [] for c in field.split(",")]
    codings = ["gzip" if c == "x-gzip" else c for c in codings if c not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "deflate"):
        return _Decoder(codings[0])
    raise ImageError(
        f"Could not download {shown}: the server sent it compressed as '{one_line(', '.join(codings))}', "
        "which blip2-chat cannot undo.",
        "Download the image in a browser and pass the file.",
    )


class _Transfer:
    """One GET on a helper thread, so that whoever waits for it can keep a deadline and a cancel
    check even while the transfer blocks in a DNS look-up, a connect or a read."""

    def __init__(self, url: str, timeout: float, shown: str = "", host: str = "") -> None:
        """`url`: the link to send (see `request_url`); `shown`: how messages name it; `host`: its host
        (and port) as typed, for messages about the server."""
        self.url, self.timeout = url, timeout
        self.shown = shown or visible(url)
        self.host = host or visible(urlsplit(url).netloc)
        self.done = threading.Event()  # set when the body or an error is ready
        self.stop = threading.Event()  # set by a waiter that gave up: end at the next read
        self.answered = threading.Event()  # set once the server's response headers have arrived
        self.body = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.body = self._fetch()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
            self.error = e
        finally:
            self.done.set()

    def _fetch(self) -> bytes:
        """GET the URL in chunks, refusing bodies over MAX_DOWNLOAD_BYTES (received, or once decoded) as
        soon as they pass it."""
        shown = self.shown
        too_big = ImageError(
            f"{shown} is larger than {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MB.",
            "Download it yourself, shrink it if needed, and pass the local file.",
        )
        cut_short = ImageError(
            f"Could not download {shown}: the server closed the connection before the whole image arrived.",
            "Try again, or download the image and pass the file.",
        )
        headers = {"User-Agent": f"blip2-chat/{__version__}", "Accept": "image/*,*/*;q=0.8"}
        opener = urllib.request.build_opener(_HttpOnlyRedirects({self.url: shown}))
        chunks: list[bytes] = []
        try:
            with opener.open(Request(self.url, headers=headers), timeout=self.timeout) as resp:
                self.answered.set()
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
                    raise too_big
                decoder = _decoder(shown, resp.headers)
                received = total = 0
                # read1 returns what has arrived rather than waiting for a full chunk, so `stop`
                # is seen within one read even when the server sends a byte at a time.
                while not self.stop.is_set() and (chunk := resp.read1(64 * 1024)):
                    received += len(chunk)
                    if decoder is not None:
                        chunk = decoder.decode(chunk, MAX_DOWNLOAD_BYTES - total + 1)
                    total += len(chunk)
                    if max(received, total) > MAX_DOWNLOAD_BYTES:
                        raise too_big
                    chunks.append(chunk)
                if not self.stop.is_set():
                    if resp.length:  # bytes that Content-Length promised and the server never sent
                        raise cut_short
                    if decoder is not None and not decoder.complete and received:
                        raise _damaged_compression(shown)
        except urllib.error.HTTPError as e:
            e.close()
            said = str(e.reason)
            if said.startswith(urllib.request.HTTPRedirectHandler.inf_msg):
                raise ImageError(  # urllib's text for this spans three lines; say it in one
                    f"Could not download {shown}: it redirects in a loop or too many times.",
                    "Open the link in a browser and pass the address it ends at, or download the image.",
                ) from None
            detail = f"the server answered {e.code} ({one_line(said)})"
            hint = "Check the link in a browser; it may have moved or need a login."
            if e.code >= 500:
                hint = "The server had a problem; try again later, or download the image and pass the file."
            raise ImageError(f"Could not download {shown}: {detail}.", hint) from None
        except zlib.error:
            raise _damaged_compression(shown) from None
        except http.client.IncompleteRead:  # a chunked body cut short
            raise cut_short from None
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, timeouts, resets, bad URLs
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            if isinstance(reason, TimeoutError):
                raise _too_slow(shown, self.timeout, self.answered.is_set()) from None
            raise _failed(shown, self.host, reason, self.answered.is_set()) from None
        return b"".join(chunks)


def _damaged_compression(shown: str) -> ImageError:
    return ImageError(
        f"Could not download {shown}: the server sent a compressed answer that is damaged or incomplete.",
        "Try again, or download the image in a browser and pass the file.",
    )


# OpenSSL's verification codes for the usual reasons a certificate is refused, in words
_CERTIFICATE_PROBLEMS = {
    9: "it is not valid yet",
    10: "it has expired",
    18: "it is self-signed",
    19: "it is signed by a certificate this computer does not trust",
    20: "it is not signed by an authority this computer trusts",
    21: "it is not signed by an authority this computer trusts",
    23: "it has been revoked",
    62: "it was issued for another name",
}


def _failed(shown: str, host: str, reason: object, answered: bool) -> ImageError:
    """One sentence for a transfer that failed below HTTP's status codes: the connection, TLS, or an answer
    that is no HTTP (`answered`: after the server's headers had come). The OS's own words are kept
    ("Connection refused"); Python's and OpenSSL's are not."""
    connection = "Check the address and your connection, or download the image and pass the file."
    if isinstance(reason, ssl.SSLCertVerificationError):
        problem = _CERTIFICATE_PROBLEMS.get(reason.verify_code or 0)
        return ImageError(
            f"Could not download {shown}: the server's certificate could not be verified"
            f"{f' ({problem})' if problem else ''}.",
            "Check the address; if it is right, download the image yourself and pass the file.",
        )
    if isinstance(reason, ssl.SSLError) and answered:
        return ImageError(f"Could not download {shown}: the secure connection to {host} broke off (an SSL error).",
                          "Try again, or download the image and pass the file.")
    if isinstance(reason, ssl.SSLError):  # WRONG_VERSION_NUMBER (a plain http server), handshake failures...
        return ImageError(
            f"Could not download {shown}: the server at {host} did not answer as an https server (an SSL error).",
            "Check whether the link should start with http://, or download the image and pass the file.",
        )
    if isinstance(reason, http.client.RemoteDisconnected):
        return ImageError(f"Could not download {shown}: the server closed the connection without answering.",
                          connection)
    if isinstance(reason, http.client.InvalidURL):
        return ImageError(f"Could not download {shown}: the link is not valid.", connection)
    if isinstance(reason, http.client.HTTPException):  # a bad status line, a header line too long...
        return ImageError(f"Could not download {shown}: the server's answer is not valid HTTP.", connection)
    if isinstance(reason, OSError) and reason.strerror:
        detail = one_line(reason.strerror)  # "Connection refused", not "[Errno 111] ..."
    elif isinstance(reason, OSError | str):
        detail = one_line(str(reason) or type(reason).__name__)
    else:  # a ValueError from deep in urllib: its words are for programmers
        detail = "the link could not be used"
    return ImageError(f"Could not download {shown}: {detail}.", connection)


def _too_slow(shown: str, timeout: float, answered: bool) -> ImageError:
    """The download ran out of time: before the server answered, or while its body trickled in.

    The same words whichever side noticed first, the waiting thread's deadline or the transfer's
    socket timeout (which, once the server has answered, also means the whole took too long)."""
    if not answered:
        return ImageError(
            f"Could not download {shown}: no answer within {_seconds(timeout)} s.",
            "Check the address and your connection, or download the image and pass the file.",
        )
    return ImageError(
        f"Downloading {shown} took longer than {_seconds(timeout)} s, so it was stopped.",
        "The server is sending very slowly; try again later, or download the image and pass the file.",
    )


def download(url: str, cancel: Callable[[], bool] | None = None) -> bytes:
    """The body at `url`, fetched within DOWNLOAD_TIMEOUT_S in all, or sooner given up on `cancel`.

    The transfer runs on a daemon thread and this one waits for it, waking every CANCEL_POLL_S to
    ask `cancel`. A transfer given up on stops at its next read, and within one socket timeout at
    worst (a server that sends nothing at all), so it never outlives the caller's interest for long.
    """
    target = request_url(url)  # a link it cannot send, or one with a password, is refused before anything
    typed = url.strip()
    shown = visible(typed)
    stopped = ImageError(f"Stopped opening {shown}.", "")
    if cancel is not None and cancel():
        raise stopped
    timeout = DOWNLOAD_TIMEOUT_S
    transfer = _Transfer(target, timeout, shown, visible(urlsplit(typed).netloc))
    deadline = time.monotonic() + timeout
    threading.Thread(target=transfer.run, name="blip2-chat image download", daemon=True).start()
    while not transfer.done.wait(min(CANCEL_POLL_S if cancel else timeout, deadline - time.monotonic())):
        if cancel is not None and cancel():
            transfer.stop.set()
            raise stopped
        if time.monotonic() >= deadline:
            transfer.stop.set()
            raise _too_slow(shown, timeout, transfer.answered.is_set())
    if transfer.error is not None:
        raise transfer.error
    if cancel is not None and cancel():
        raise stopped
    if not transfer.body:
        raise ImageError(f"{shown} returned an empty body.", "Check the link points at the image itself.")
    return transfer.body
