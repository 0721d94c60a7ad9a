"""What the sign-in providers share: the identity they vouch for, the one
failure (OAUTH_FAILED), and the authorization-code exchange of RFC 6749 with
PKCE (RFC 7636), built with authlib and sent with httpx."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from core.errors import ErrorCode, ObserveError
from core.oauth.flow import Flow

HTTP_TIMEOUT = httpx.Timeout(10.0)
_MAX_BODY = 1 << 20  # a provider's JSON answer larger than this is not one


@dataclass(frozen=True, slots=True)
class Identity:
    """A provider account: its stable id there, its e-mail and whether the
    provider verified that e-mail."""

    subject: str
    email: str
    email_verified: bool
    name: str = ""


class Provider(Protocol):
    name: str
    label: str  # for messages: "Google", "GitHub"

    async def authorize_url(self, http: httpx.AsyncClient, flow: Flow, redirect_uri: str) -> str: ...

    async def identity(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, flow: Flow, issuer: str
    ) -> Identity: ...


def failed(message: str) -> ObserveError:
    return ObserveError(ErrorCode.ERROR_CODE_OAUTH_FAILED, message)


def authorization_url(endpoint: str, client_id: str, redirect_uri: str, scope: str, flow: Flow, **extra: str) -> str:
    """The provider's consent URL: authorization code with S256 PKCE."""
    challenge: str = create_s256_code_challenge(flow.verifier)  # type: ignore[no-untyped-call]  # untyped in the stubs
    url: str = prepare_grant_uri(
        endpoint,
        client_id,
        "code",
        redirect_uri,
        scope,
        flow.state,
        code_challenge=challenge,
        code_challenge_method="S256",
        **extra,
    )
    return url


async def exchange_code(
    http: httpx.AsyncClient,
    endpoint: str,
    *,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    verifier: str,
    basic_auth: bool,
    label: str,
) -> dict[str, Any]:
    """The token response for ``code``. With ``basic_auth`` the client
    authenticates with HTTP Basic (RFC 6749 §2.3.1, names form-encoded),
    else with client_id and client_secret in the body (GitHub's way)."""
    in_body = {} if basic_auth else {"client_id": client_id, "client_secret": client_secret}
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=verifier, **in_body
    )
    auth = httpx.BasicAuth(quote(client_id, safe=""), quote(client_secret, safe="")) if basic_auth else None
    data = await fetch_json(
        http,
        "POST",
        endpoint,
        label=label,
        content=body,
        auth=auth,
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
        accept_errors=True,
    )
    if not isinstance(data, dict) or data.get("error") or not data.get("access_token"):
        error = data.get("error", "no access token") if isinstance(data, dict) else "not a token response"
        raise failed(f"{label} refused the sign-in code ({str(error)[:100]}); start again")
    return data


async def fetch_json(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    label: str,
    accept_errors: bool = False,
    **kwargs: Any,
) -> Any:
    """A provider's JSON answer. Unreachable, a non-JSON answer or (unless
    ``accept_errors``, for token endpoints that answer errors as JSON) a
    non-2xx status is OAUTH_FAILED: the sign-in cannot go on."""
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise failed(f"{label} could not be reached ({type(exc).__name__}); try again") from None
    if not (response.is_success or (accept_errors and response.status_code in (400, 401))):
        raise failed(f"{label} answered HTTP {response.status_code}; try again")
    if len(response.content) > _MAX_BODY:
        raise failed(f"{label} answered more than {_MAX_BODY} bytes")
    try:
        return response.json()
    except ValueError:
        raise failed(f"{label} answered something that is not JSON") from None
