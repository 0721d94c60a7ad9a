"""PLACEHOLDER (helper B replaces this file): the HTML status page."""

from __future__ import annotations

from html import escape

from observe.v1 import status_pages_pb2 as pb

from core.status_pages.store import PageRow


def render_page(view: pb.GetPublicStatusPageResponse, page: PageRow, base: str) -> bytes:
    return f"<!doctype html><title>{escape(page.name)}</title><h1>{escape(page.name)}</h1>".encode()


def render_password_form(page: PageRow, base: str, error: str | None) -> bytes:
    action = escape(base or "/status/" + page.slug)
    return f'<form method="post" action="{action}/unlock"><input name="password" type="password"></form>'.encode()


def render_notice(page: PageRow | None, base: str, title: str, text: str) -> bytes:
    return f"<!doctype html><h1>{escape(title)}</h1><p>{escape(text)}</p>".encode()


def render_unsubscribe_form(page: PageRow, base: str, action: str) -> bytes:
    return f'<!doctype html><form method="post" action="{escape(action)}"><button>Unsubscribe</button></form>'.encode()


def render_not_found() -> bytes:
    return b"<!doctype html><h1>No such status page</h1>"
