"""Which mailed files the agents see as photos, as documents, or listed by size (pure rules)."""

from __future__ import annotations

import pytest

from bot.mail_files import (
    UPLOAD_LIMIT,
    as_photo,
    caption,
    listing_html,
    size_text,
    split_files,
)
from tickets.mailed_files import MailedFile


def mailed(name: str, mime: str, size: int, *, kept: bool = True) -> MailedFile:
    return MailedFile(0, name, mime, size, b"x" * min(size, 16) if kept else None)


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (812, "812 B"), (1024, "1.0 KB"), (14_540, "14.2 KB"), (76_965_478, "73.4 MB")],
)
def test_sizes_read_as_agents_expect(size: int, shown: str) -> None:
    assert size_text(size) == shown


def test_kept_files_are_posted_and_the_rest_listed() -> None:
    small = MailedFile(0, "a.pdf", "application/pdf", 10, b"0123456789")
    dropped = mailed("big.iso", "application/octet-stream", 80 * 1024 * 1024, kept=False)
    empty = MailedFile(2, "empty.txt", "text/plain", 0, b"")
    posted, listed = split_files([small, dropped, empty])
    assert posted == [small]
    assert listed == [dropped, empty]


def test_over_the_upload_limit_is_listed_even_if_kept() -> None:
    huge = MailedFile(0, "huge.bin", "application/octet-stream", UPLOAD_LIMIT + 1, None)
    assert split_files([huge]) == ([], [huge])


@pytest.mark.parametrize(
    ("mime", "size", "photo"),
    [
        ("image/png", 1000, True),
        ("IMAGE/JPEG", 1000, True),
        ("image/webp", 1000, True),
        ("image/gif", 1000, False),
        ("image/svg+xml", 1000, False),
        ("application/pdf", 1000, False),
        ("image/png", 10 * 1024 * 1024 + 1, False),
    ],
)
def test_photos_are_common_images_up_to_10_mb(mime: str, size: int, photo: bool) -> None:
    assert as_photo(mailed("f", mime, size)) is photo


def test_captions_and_listing_escape_names() -> None:
    odd = MailedFile(0, "<b>x</b>.pdf", "application/pdf", 2048, None)
    assert caption(7, odd) == "📎 #7 · <b>x</b>.pdf (2.0 KB)"  # captions are escaped on posting
    listing = listing_html(7, [odd])
    assert "&lt;b&gt;x&lt;/b&gt;.pdf — 2.0 KB" in listing
    assert listing.startswith("📎 #7: too large to post here (Telegram takes up to 50 MB)")
    many = listing_html(7, [odd] * 60)
    assert many.endswith("… and 10 more")
