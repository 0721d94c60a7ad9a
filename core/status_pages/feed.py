"""PLACEHOLDER (helper D replaces this file): the Atom feed."""

from __future__ import annotations

from observe.v1 import status_pages_pb2 as pb

from core.status_pages.store import PageRow


def render_feed(view: pb.GetPublicStatusPageResponse, page: PageRow, page_url: str, feed_url: str) -> bytes:
    return b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"></feed>'
