"""Signed tokens of the status pages, made with itsdangerous from keys
derived from the server key (one purpose each, so a token of one kind is
never another's):

- access tokens of password-protected pages: the page ids they unlock, each
  with a fingerprint of the page's password hash, so a new password locks
  out every earlier unlock; they expire after ``ACCESS_TTL``;
- the confirm and unsubscribe links of subscription mails: the subscriber
  id; a confirm link expires after ``CONFIRM_TTL``, an unsubscribe link
  never (it must work from any old mail). An unsubscribe deletes the row,
  and ids are never reused, so no link outlives its subscription.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer

from core.storage.sealing import Sealer

ACCESS_TTL = timedelta(days=7)
CONFIRM_TTL = timedelta(days=7)
MAX_UNLOCKED_PAGES = 20  # pages one access cookie keeps unlocked
ACCESS_COOKIE = "observe_status_page"


def password_fingerprint(password_hash: str) -> str:
    """A short digest of a page's password hash (never the hash itself)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class PageTokens:
    def __init__(self, sealer: Sealer) -> None:
        def timed(purpose: str) -> URLSafeTimedSerializer:
            return URLSafeTimedSerializer(
                sealer.signing_keys(purpose), salt=purpose, signer_kwargs={"digest_method": hashlib.sha256}
            )

        self._access = timed("status-page-access")
        self._confirm = timed("status-page-subscription-confirm")
        self._unsubscribe = URLSafeSerializer(
            sealer.signing_keys("status-page-unsubscribe"),
            salt="status-page-unsubscribe",
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    # ---- access ----------------------------------------------------------------

    def access_token(self, unlocked: dict[int, str], now: datetime) -> tuple[str, datetime]:
        """A token unlocking ``unlocked`` (page id → password fingerprint),
        and when it expires. The newest pages are kept when there are too many."""
        pages = list(unlocked.items())[-MAX_UNLOCKED_PAGES:]
        token = self._access.dumps([[page_id, fp] for page_id, fp in pages])
        return token, now + ACCESS_TTL

    def unlocked_pages(self, token: str) -> dict[int, str]:
        """The pages a token unlocks (page id → fingerprint); empty when it is
        forged, malformed or expired."""
        if not token:
            return {}
        try:
            raw = self._access.loads(token, max_age=int(ACCESS_TTL.total_seconds()))
        except (BadSignature, ValueError, TypeError):
            return {}
        out: dict[int, str] = {}
        if isinstance(raw, list):
            for item in raw:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and isinstance(item[1], str):
                    out[item[0]] = item[1]
        return out

    def unlocks(self, tokens: list[str], page_id: int, password_hash: str | None) -> bool:
        """One of ``tokens`` (header, cookie) unlocks the page as its password now is."""
        if password_hash is None:
            return True
        fingerprint = password_fingerprint(password_hash)
        return any(self.unlocked_pages(token).get(page_id) == fingerprint for token in tokens if token)

    # ---- subscription links ----------------------------------------------------

    def confirm_token(self, subscriber_id: int) -> str:
        return self._confirm.dumps(subscriber_id)

    def confirmed_subscriber(self, token: str) -> int | None:
        """The subscriber a confirm link names; None when forged or expired."""
        try:
            value = self._confirm.loads(token, max_age=int(CONFIRM_TTL.total_seconds()))
        except (BadSignature, ValueError, TypeError):
            return None
        return value if isinstance(value, int) else None

    def unsubscribe_token(self, subscriber_id: int) -> str:
        return self._unsubscribe.dumps(subscriber_id)

    def unsubscribed_subscriber(self, token: str) -> int | None:
        """The subscriber an unsubscribe link names; None when forged."""
        try:
            value = self._unsubscribe.loads(token)
        except (BadSignature, ValueError, TypeError):
            return None
        return value if isinstance(value, int) else None
