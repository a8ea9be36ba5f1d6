"""Keyset paging shared by every list RPC: an opaque page token that encodes where the last page
ended (a sort value and an id to break ties), and one check of the requested page size."""
from __future__ import annotations

import base64

from llmops.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50


class InvalidPageToken(InvalidArgument):
    """A page token this server did not issue (INVALID_ARGUMENT)."""


def encode_page_token(position: int, key: str) -> str:
    """The token of a page that ended at (``position``, ``key``), e.g. (start time, trace id)."""
    return base64.urlsafe_b64encode(f"{position}:{key}".encode()).decode()


def decode_page_token(token: str) -> tuple[int, str]:
    try:
        position, key = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        return int(position), key
    except Exception:
        raise InvalidPageToken(f"page_token {token[:40]!r} is not one this server issued") from None


def page_size(requested: int, maximum: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    """``requested`` (0 means ``default``), or INVALID_ARGUMENT when it is outside 1..``maximum``."""
    size = requested or default
    if size < 1 or size > maximum:
        raise InvalidArgument(f"page_size must be between 1 and {maximum}, got {requested}")
    return size
