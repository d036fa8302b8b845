"""What an address is (`scheme://...`) is decided once (chatbot.image_download.address_scheme): opening a picture,
masking the logins of a typed line and `index --forget` all take the same strings for addresses.

The copies disagreed on two points, now settled: a one-letter scheme (`C://photos/a.jpg`, a Windows drive) is a
path, as `load_image` already took it (`index --forget` refused it, and the history masked a login in it); and
spaces around an address do not make it a path, as `is_url` already said (`index --forget " s3://b"` went on).
"""

from __future__ import annotations

import os

import pytest

from chatbot.errors import UserError
from chatbot.frontends.search.index_run import ForgetRequest, run_forget
from chatbot.image_download import address_scheme, is_address, is_url, without_logins
from chatbot.images import recorded_source

ADDRESSES = ["https://example.com/a.png", "HTTP://x/y", "s3://bucket/a.jpg", "ftp://me:pw@host/a.png",
             "git+ssh://host/r", "  https://padded.example/a.png  ", " s3://bucket/a.jpg"]
PATHS = ["C://photos/a.jpg", "c:\\photos\\a.jpg", "/home/me/a.png", "photos/a.png", "a:b.png", "://x", "1a://x",
         "https:/one-slash/a.png", "x y://z"]


@pytest.mark.parametrize("text", ADDRESSES)
def test_an_address_is_one_everywhere(text: str) -> None:
    assert is_address(text)
    assert recorded_source(text) == text.strip().replace("me:pw@", "me:***@")  # as given, never made a path
    with pytest.raises(UserError, match="works on files and folders of this machine"):
        run_forget(ForgetRequest((text,)))


@pytest.mark.parametrize("text", PATHS)
def test_a_path_is_one_everywhere(text: str) -> None:
    assert not is_address(text) and address_scheme(text) is None and not is_url(text)
    assert recorded_source(text) == os.path.abspath(os.path.expanduser(text))


def test_only_http_and_https_are_fetched() -> None:
    assert address_scheme(" HTTPS://x/a.png") == "https" and is_url(" HTTPS://x/a.png")
    assert address_scheme("s3://b/a") == "s3" and not is_url("s3://b/a")


def test_a_login_is_masked_in_every_address_of_a_line_and_a_drive_letter_is_left_alone() -> None:
    assert without_logins("/image https://bob:pw@x/a.png then s3://al:key@b/c") == (
        "/image https://bob:***@x/a.png then s3://al:***@b/c")
    assert without_logins("/image C://photos/a.png") == "/image C://photos/a.png"


def test_describe_and_index_take_a_one_letter_scheme_for_a_drive_as_everywhere_else() -> None:
    from chatbot.image_files import is_storage_uri, refuse_other_schemes

    refuse_other_schemes("C://photos", "describe", ray_reads_storage=True)  # a path: no refusal here
    assert not is_storage_uri("C://photos")
    assert is_storage_uri("S3://bucket/photos")
    with pytest.raises(UserError, match="only with --ray"):
        refuse_other_schemes("S3://bucket/photos", "describe", ray_reads_storage=True)
    with pytest.raises(UserError, match="not ftp://host/a"):
        refuse_other_schemes("ftp://host/a", "index", ray_reads_storage=False)
