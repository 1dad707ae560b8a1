"""Sign-in for DICOMweb nodes, kept in the system's keyring (the Secret Service on Linux, the Keychain on macOS,
the Credential Manager on Windows) and never in the viewer's settings file.

Each node's sign-in is stored under its base URL: HTTP basic auth (a user and a password) or a bearer token. A
service without a keyring (the `listen` node run by systemd) gives them in its environment instead:

    MEDEDGE_DICOMWEB_TOKEN                            a bearer token, or
    MEDEDGE_DICOMWEB_USER, MEDEDGE_DICOMWEB_PASSWORD  HTTP basic auth

The keyring's entry for a node comes first; the environment is read only when there is none.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

KEYRING_SERVICE = "MedEdge Viewer DICOMweb"


class CredentialStoreError(Exception):
    """The keyring cannot be used; the message is one line for the Settings dialog."""


@dataclass(frozen=True)
class SignIn:
    """HTTP basic auth (`user`, `password`) or a bearer `token`; empty: none."""

    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.token and (self.user or self.password):
            raise ValueError("DICOMweb sign-in: a user and password, or a token, not both")
        if self.password and not self.user:
            raise ValueError("DICOMweb sign-in: a password needs its user name")

    def __bool__(self) -> bool:
        return bool(self.user or self.token)

    @property
    def kind(self) -> str:
        return "bearer token" if self.token else f"user {self.user}" if self.user else "none"


def _keyring():
    import keyring  # (imported when a DICOMweb node is used)
    from keyring.errors import KeyringError

    return keyring, KeyringError


def stored_sign_in(url: str) -> SignIn | None:
    """The keyring's sign-in for the node at `url`; None when none is stored or there is no keyring."""
    keyring, KeyringError = _keyring()
    try:
        secret = keyring.get_password(KEYRING_SERVICE, url)
    except KeyringError:  # no keyring on this system (a service): the environment may have them
        return None
    if not secret:
        return None
    try:
        return SignIn(**json.loads(secret))
    except (ValueError, TypeError):
        return None  # not written by this program: ignored rather than sent


def store_sign_in(url: str, sign_in: SignIn) -> None:
    """Keep `sign_in` for the node at `url` in the keyring (an empty one forgets it); CredentialStoreError with
    the reason when the keyring cannot."""
    keyring, KeyringError = _keyring()
    try:
        if sign_in:
            secret = {"user": sign_in.user, "password": sign_in.password} if sign_in.user else {"token": sign_in.token}
            keyring.set_password(KEYRING_SERVICE, url, json.dumps(secret))
        elif keyring.get_password(KEYRING_SERVICE, url) is not None:
            keyring.delete_password(KEYRING_SERVICE, url)
    except KeyringError as exc:
        from keyring.errors import NoKeyringError

        reason = ("this system runs no keyring (a desktop's Secret Service, Keychain or Credential Manager)"
                  if isinstance(exc, NoKeyringError) else
                  f"the system keyring refused: {' '.join(str(exc).split())[:120] or type(exc).__name__}")
        raise CredentialStoreError(f"sign-in not saved: {reason}; a service gives it in MEDEDGE_DICOMWEB_USER and "
                                   "MEDEDGE_DICOMWEB_PASSWORD, or MEDEDGE_DICOMWEB_TOKEN") from None


def sign_in_for(url: str) -> SignIn:
    """The sign-in to use with the node at `url`: the keyring's, else the environment's, else none."""
    stored = stored_sign_in(url)
    if stored is not None:
        return stored
    if os.environ.get("MEDEDGE_DICOMWEB_TOKEN"):
        return SignIn(token=os.environ["MEDEDGE_DICOMWEB_TOKEN"])
    if os.environ.get("MEDEDGE_DICOMWEB_USER"):
        return SignIn(os.environ["MEDEDGE_DICOMWEB_USER"], os.environ.get("MEDEDGE_DICOMWEB_PASSWORD", ""))
    return SignIn()
