"""Secrets at rest (webhook secrets, alert URLs, headers, bot tokens),
sealed with the server key: AES-256-GCM, ``v1.<key id>.<base64 nonce+data>``.

Keys come from ``OBSERVE_SECRET_KEYS`` (``id:base64key,id:base64key``; the
first seals, all open) or, for a single host, from ``server.key`` in the
data directory, made on first use. To rotate: put a new key in front, run
``observe admin reseal`` (every secret is sealed again with it), then drop
the old key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"


class Sealer:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("no server key")
        self.primary = keys[0][0]
        self._raw = dict(keys)
        self._ciphers = {kid: AESGCM(key) for kid, key in keys}

    @classmethod
    def from_settings(cls, env_keys: str | None, data_dir: Path) -> Sealer:
        if env_keys:
            keys = []
            for part in env_keys.split(","):
                kid, _, b64 = part.strip().partition(":")
                keys.append((kid, base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))))
            return cls(keys)
        return cls([("local1", _key_file(data_dir / "server.key"))])

    def signing_keys(self, purpose: str) -> list[bytes]:
        """Keys for signing ``purpose``'s tokens, derived from the server keys
        (HMAC-SHA256 of the purpose): the oldest first, the current (primary)
        last, so tokens signed before a key rotation still verify while the
        old key is listed."""
        keys = [hmac.new(key, purpose.encode(), hashlib.sha256).digest() for key in self._raw.values()]
        keys.append(keys.pop(list(self._raw).index(self.primary)))
        return keys

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        data = self._ciphers[self.primary].encrypt(nonce, plaintext.encode(), self.primary.encode())
        return f"{VERSION}.{self.primary}.{base64.urlsafe_b64encode(nonce + data).decode()}"

    def open(self, sealed: str) -> str:
        version, kid, b64 = sealed.split(".", 2)
        if version != VERSION or kid not in self._ciphers:
            raise ValueError(f"cannot open a secret sealed with key {kid!r}")
        raw = base64.urlsafe_b64decode(b64)
        return self._ciphers[kid].decrypt(raw[:12], raw[12:], kid.encode()).decode()


def _key_file(path: Path) -> bytes:
    """The 32-byte key in ``path``, created (mode 600) if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.urlsafe_b64decode(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        key = AESGCM.generate_key(bit_length=256)
        f.write(base64.urlsafe_b64encode(key).decode())
    return key


def key_id(sealed: str) -> str:
    """The id of the key a value was sealed with."""
    return sealed.split(".", 2)[1]
