"""The flow cookie: what a sign-in or link started with, sealed (AES-GCM with
the server key, so it can be neither read nor forged) into one short-lived
HttpOnly cookie of the browser that started it.

It holds the ``state`` sent to the provider (the callback's must match), the
PKCE verifier, the OpenID nonce, the invite token, the redirect path and,
for a link, the user to link to. The callback accepts a state once
(``oauth_used_states``).
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import asdict, dataclass

from authlib.common.security import generate_token

from core.storage.sealing import Sealer

COOKIE = "observe_oauth"
COOKIE_PATH = "/api/v1/auth/"  # sent to the callbacks only
TTL_SECONDS = 600
_PURPOSE = "oauth-flow"


@dataclass(frozen=True, slots=True)
class Flow:
    """One started sign-in or link."""

    provider: str
    state: str
    verifier: str
    nonce: str
    redirect: str
    invite: str = ""
    link_user_id: int | None = None
    expires: float = 0.0

    @classmethod
    def start(cls, provider: str, *, redirect: str, invite: str = "", link_user_id: int | None = None) -> Flow:
        """A new flow with fresh random state, verifier (RFC 7636: 43–128
        characters) and nonce."""
        return cls(
            provider=provider,
            state=generate_token(43),
            verifier=generate_token(64),
            nonce=generate_token(43),
            redirect=redirect,
            invite=invite,
            link_user_id=link_user_id,
            expires=time.time() + TTL_SECONDS,
        )

    def matches(self, provider: str, state: str) -> bool:
        return self.provider == provider and hmac.compare_digest(self.state.encode(), state.encode())


def seal(sealer: Sealer, flow: Flow) -> str:
    return sealer.seal(json.dumps({"purpose": _PURPOSE, **asdict(flow)}, separators=(",", ":")))


def unseal(sealer: Sealer, cookie: str) -> Flow | None:
    """The flow in a cookie, or None when it is missing, forged, sealed with a
    key no longer listed, or expired."""
    if not cookie:
        return None
    try:
        data = json.loads(sealer.open(cookie))
        if data.pop("purpose") != _PURPOSE:
            return None
        flow = Flow(**data)
    except (ValueError, TypeError, KeyError):
        return None
    return flow if flow.expires > time.time() else None


def set_cookie(value: str, *, secure: bool, max_age: int = TTL_SECONDS) -> tuple[str, str]:
    """The Set-Cookie header of the flow cookie (``max_age=0`` with no value clears it). SameSite=Lax:
    the provider's redirect back is a top-level navigation, which Lax cookies go along with."""
    attributes = f"Max-Age={max_age}; Path={COOKIE_PATH}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return ("set-cookie", f"{COOKIE}={value}; {attributes}")


def clear_cookie(*, secure: bool) -> tuple[str, str]:
    return set_cookie("", secure=secure, max_age=0)
