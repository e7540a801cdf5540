"""Errors raised by `jsd.hsm`.

Messages name labels, groups and PKCS#11 return-code names only, never key bytes::

    HsmError
     ├── MicMismatch       the request MIC does not match (join, rejoin, check_mic)
     ├── KeyNotFound       no KEK / storage KEK with that label in the token
     ├── KekExists         import_kek on a label that is already taken
     ├── InvalidKeyBlob    a stored blob that does not unwrap under the group's storage KEK
     └── HsmUnavailable    module, token, login or session is gone; the caller may retry later
"""

from __future__ import annotations

__all__ = ["HsmError", "HsmUnavailable", "InvalidKeyBlob", "KekExists", "KeyNotFound", "MicMismatch"]


class HsmError(Exception):
    """Base class: anything the HSM layer refuses or fails to do."""


class MicMismatch(HsmError):
    """The MIC computed in the token differs from the one in the frame."""


class KeyNotFound(HsmError):
    """A KEK or storage KEK label has no key in the token; the message names the label only."""


class KekExists(HsmError):
    """A KEK with this label is already in the token; labels are never silently re-used."""


class KeyNotExportable(HsmError):
    """The key was imported, or its one export has been done: the token will not reveal it."""


class InvalidKeyBlob(HsmError):
    """A stored blob is corrupt, truncated or wrapped under another group's storage KEK."""


class HsmUnavailable(HsmError):
    """The PKCS#11 module, token, login or session cannot be used right now."""
