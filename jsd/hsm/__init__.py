"""Key custody: the only package that touches key material (PKCS#11 through one ctypes module, `cryptoki`).

Root keys live in the database only as RFC 3394 blobs under a per-group storage KEK inside the token;
a join is described as a `JoinRecipe` and executed inside the token by `Hsm.run_join`.
"""

from jsd.hsm.config import HsmSettings, Pin, load_pin
from jsd.hsm.errors import (
    HsmError,
    HsmUnavailable,
    InvalidKeyBlob,
    KekExists,
    KeyNotExportable,
    KeyNotFound,
    MicMismatch,
)
from jsd.hsm.recipe import Derive, JoinOutput, JoinRecipe, Usage, session_store_kek_label, storage_kek_label
from jsd.hsm.service import Hsm
from jsd.hsm.softhsm import bootstrap_softhsm, find_softhsm_module, init_softhsm_token, softhsm_conf_for

__all__ = [
    "Derive",
    "Hsm",
    "HsmError",
    "HsmSettings",
    "HsmUnavailable",
    "InvalidKeyBlob",
    "JoinOutput",
    "JoinRecipe",
    "KekExists",
    "KeyNotExportable",
    "KeyNotFound",
    "MicMismatch",
    "Pin",
    "Usage",
    "bootstrap_softhsm",
    "find_softhsm_module",
    "init_softhsm_token",
    "load_pin",
    "session_store_kek_label",
    "softhsm_conf_for",
    "storage_kek_label",
]
