"""Fetching an image over http(s): one deadline for the whole download, a size limit, redirects only to
http(s), and a cancel check, so a slow or hostile server can neither keep the caller waiting for ever
nor send more than MAX_DOWNLOAD_BYTES. Every problem is one `ImageError` sentence.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO
from urllib.request import Request

from chatbot import __version__
from chatbot.errors import ImageError
from chatbot.untrusted import visible

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
# The whole download, from the DNS look-up to the last byte, and also the limit for each socket
# operation: a server that drips a byte every few seconds never trips a per-read timeout alone.
DOWNLOAD_TIMEOUT_S: float = 15
CANCEL_POLL_S = 0.1  # how often a waiting download asks its `cancel` check


def is_url(text: str) -> bool:
    """True for http:// and https:// links (the only schemes we fetch)."""
    return text.strip().lower().startswith(("http://", "https://"))


def one_line(text: str) -> str:
    """Free text from outside (a server's reason, an OS message) as one clean line for a message.

    Runs of whitespace, line breaks included, become one space (urllib's redirect-loop reason spans
    three lines), and any other control character is shown by `visible`. Names and URLs go through
    `visible` alone: their spaces are part of them.
    """
    return visible(" ".join(text.split()))


def _seconds(value: float) -> str:
    """15 -> "15", 0.3 -> "0.3": a timeout as the user would write it."""
    return f"{value:g}"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s), so a link cannot bounce us to ftp://."""

    def redirect_request(  # noqa: PLR0913 - the signature is urllib's
        self, req: Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage, newurl: str
    ) -> Request | None:
        if not is_url(newurl):
            raise ImageError(
                f"{visible(req.full_url)} redirects to {visible(newurl)}, which is not an http(s) link.",
                "Use a direct http:// or https:// link to the image.",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Transfer:
    """One GET on a helper thread, so that whoever waits for it can keep a deadline and a cancel
    check even while the transfer blocks in a DNS look-up, a connect or a read."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url, timeout
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
        """GET the URL in chunks, refusing bodies over MAX_DOWNLOAD_BYTES as soon as they pass it."""
        shown = visible(self.url)
        too_big = ImageError(
            f"{shown} is larger than {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MB.",
            "Download it yourself, shrink it if needed, and pass the local file.",
        )
        headers = {"User-Agent": f"blip2-chat/{__version__}", "Accept": "image/*,*/*;q=0.8"}
        opener = urllib.request.build_opener(_HttpOnlyRedirects)
        chunks: list[bytes] = []
        try:
            with opener.open(Request(self.url, headers=headers), timeout=self.timeout) as resp:
                self.answered.set()
                length = resp.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > MAX_DOWNLOAD_BYTES:
                    raise too_big
                total = 0
                # read1 returns what has arrived rather than waiting for a full chunk, so `stop`
                # is seen within one read even when the server sends a byte at a time.
                while not self.stop.is_set() and (chunk := resp.read1(64 * 1024)):
                    total += len(chunk)
                    if total > MAX_DOWNLOAD_BYTES:
                        raise too_big
                    chunks.append(chunk)
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
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, timeouts, resets, bad URLs
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            if isinstance(reason, TimeoutError):
                raise _too_slow(shown, self.timeout, self.answered.is_set()) from None
            detail = one_line(text or type(reason).__name__)  # "Connection refused", not "[Errno 111] ..."
            raise ImageError(
                f"Could not download {shown}: {detail}.",
                "Check the address and your connection, or download the image and pass the file.",
            ) from None
        return b"".join(chunks)


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
    shown = visible(url)
    stopped = ImageError(f"Stopped opening {shown}.", "")
    if cancel is not None and cancel():
        raise stopped
    timeout = DOWNLOAD_TIMEOUT_S
    transfer = _Transfer(url, timeout)
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
