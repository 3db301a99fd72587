"""age encryption (SPEC §6.4). Placeholder until the encryption work lands: only the
recipient check that config validation needs."""

from __future__ import annotations

AGE_HEADER = b"age-encryption.org/v1\n"


def check_recipient(text: str) -> str:
    """Return ``text`` when it is an age (``age1…``) or ``ssh-ed25519`` recipient."""
    value = text.strip()
    if value.startswith("age1") or value.startswith("ssh-ed25519 "):
        return value
    raise ValueError("is not an age recipient (age1…) or an ssh-ed25519 public key")
