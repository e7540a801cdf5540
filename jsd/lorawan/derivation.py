"""The 16-byte blocks that AES-128 *encrypt* under a root key to give session and JS keys.

Each block is a key-type byte, then fields in air order, then zero padding to 16 bytes. The HSM encrypts a
block with the root key named in each docstring; this module never sees a key.
After a Rejoin-request, pass its RJcount as dev_nonce (1.1 §6.2.4.4).
"""

from __future__ import annotations

from jsd.lorawan.frames import EUI_SIZE, to_wire, uint_to_wire

__all__ = [
    "BLOCK_SIZE",
    "js_enc_key_block",
    "js_int_key_block",
    "session_key_blocks_10",
    "session_key_blocks_11",
]

BLOCK_SIZE = 16


def session_key_blocks_10(join_nonce: int, net_id: bytes, dev_nonce: int) -> dict[str, bytes]:
    """NwkSKey (0x01) and AppSKey (0x02) blocks: type | JoinNonce | NetID | DevNonce | pad (1.0.2 §6.2.5).

    Encrypt both with AppKey for a 1.0.x device. For a 1.1 device served with OptNeg=0 (its NS speaks 1.0.x),
    encrypt both with NwkKey: "NwkSKey" gives FNwkSIntKey, and SNwkSIntKey = NwkSEncKey = FNwkSIntKey
    (1.1 §6.2.3).
    """
    fields = (
        uint_to_wire(join_nonce, 3, "join_nonce")
        + to_wire(net_id, 3, "net_id")
        + uint_to_wire(dev_nonce, 2, "dev_nonce")
    )
    return {"NwkSKey": _block(0x01, fields), "AppSKey": _block(0x02, fields)}


def session_key_blocks_11(join_nonce: int, join_eui: bytes, dev_nonce: int) -> dict[str, bytes]:
    """The OptNeg=1 blocks: type | JoinNonce | JoinEUI | DevNonce | pad (1.1 §6.2.3).

    FNwkSIntKey (0x01), SNwkSIntKey (0x03) and NwkSEncKey (0x04) are encrypted with NwkKey, AppSKey (0x02)
    with AppKey. A 1.1 device on a 1.0.x network uses session_key_blocks_10 instead.
    """
    fields = (
        uint_to_wire(join_nonce, 3, "join_nonce")
        + to_wire(join_eui, EUI_SIZE, "join_eui")
        + uint_to_wire(dev_nonce, 2, "dev_nonce")
    )
    return {
        "FNwkSIntKey": _block(0x01, fields),
        "AppSKey": _block(0x02, fields),
        "SNwkSIntKey": _block(0x03, fields),
        "NwkSEncKey": _block(0x04, fields),
    }


def js_int_key_block(dev_eui: bytes) -> bytes:
    """0x06 | DevEUI | pad; NwkKey encrypts it to JSIntKey (1.1 §6.1.1.4).

    JSIntKey MICs the OptNeg Join-accept and the type 1 Rejoin-request.
    """
    return _block(0x06, to_wire(dev_eui, EUI_SIZE, "dev_eui"))


def js_enc_key_block(dev_eui: bytes) -> bytes:
    """0x05 | DevEUI | pad; NwkKey encrypts it to JSEncKey (1.1 §6.1.1.4).

    JSEncKey encrypts a Join-accept that answers a Rejoin-request (1.1 Table 14).
    """
    return _block(0x05, to_wire(dev_eui, EUI_SIZE, "dev_eui"))


def _block(key_type: int, fields: bytes) -> bytes:
    return (bytes([key_type]) + fields).ljust(BLOCK_SIZE, b"\x00")
