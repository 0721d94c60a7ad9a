"""GitHub: plain OAuth 2 (no id_token). The account is keyed on GitHub's
numeric user id; the e-mail is the primary one when GitHub has verified it
(``/user/emails``, which the ``user:email`` scope opens)."""

from __future__ import annotations

from typing import Any

import httpx

from core.config import OAuthProviderSettings
from core.oauth.flow import Flow
from core.oauth.provider import Identity, authorization_url, exchange_code, failed, fetch_json

SCOPE = "read:user user:email"


class GitHubProvider:
    name = "github"
    label = "GitHub"

    def __init__(self, settings: OAuthProviderSettings) -> None:
        self.url = settings.url
        self.api_url = settings.api_url
        self.client_id = settings.client_id or ""  # set: the service builds configured providers only
        self.client_secret = settings.client_secret or ""

    async def authorize_url(self, http: httpx.AsyncClient, flow: Flow, redirect_uri: str) -> str:
        return authorization_url(f"{self.url}/login/oauth/authorize", self.client_id, redirect_uri, SCOPE, flow)

    async def identity(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, flow: Flow, issuer: str
    ) -> Identity:
        token = await exchange_code(
            http,
            f"{self.url}/login/oauth/access_token",
            client_id=self.client_id,
            client_secret=self.client_secret,
            code=code,
            redirect_uri=redirect_uri,
            verifier=flow.verifier,
            basic_auth=False,
            label=self.label,
        )
        headers = {
            "authorization": f"Bearer {token['access_token']}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        }
        user = await fetch_json(http, "GET", f"{self.api_url}/user", label=self.label, headers=headers)
        emails = await fetch_json(http, "GET", f"{self.api_url}/user/emails", label=self.label, headers=headers)
        if not isinstance(user, dict) or not isinstance(user.get("id"), int) or not isinstance(emails, list):
            raise failed("GitHub's answer about the account is not what its API documents")
        primary = _primary(emails)
        return Identity(
            subject=str(user["id"]),
            email=str(primary.get("email") or "") if primary else "",
            email_verified=bool(primary and primary.get("verified") is True),
            name=str(user.get("name") or user.get("login") or ""),
        )


def _primary(emails: list[Any]) -> dict[str, Any] | None:
    return next((e for e in emails if isinstance(e, dict) and e.get("primary") is True), None)
