"""Everything the plugin uses of ChirpStack, and the first ChirpStack release that has each piece.

The bridge and the application side run against whatever ChirpStack the operator has, not against the
``chirpstack-api`` package installed here, so the minimum ChirpStack version is the newest "since" below.
``tests/plugin/test_chirpstack_versions.py`` checks this list against the proto of that release (a manifest
taken from ``chirpstack-api`` of the same version) and checks that the plugin's code touches nothing of the
API that is not listed. docs/chirpstack.md has the same facts as a table.
"""

from __future__ import annotations

from typing import Final

MINIMUM_CHIRPSTACK: Final = "4.12.0"

# gRPC: message -> fields (enum -> values, service -> RPCs), names as in ChirpStack's api/proto, package prefixed.
# Integration events arrive as protobuf JSON, so their fields are read under their lowerCamel JSON names.
PROTO_USES: Final[dict[str, tuple[str, ...]]] = {
    "api.DeviceService": ("Create", "Get", "Update", "Delete", "List", "GetKeys", "GetActivation",
                          "GetNextFCntDown", "Enqueue"),
    "api.DeviceProfileService": ("Get",),
    "api.Device": ("dev_eui", "name", "description", "application_id", "device_profile_id", "is_disabled", "tags",
                   "join_eui"),
    "api.CreateDeviceRequest": ("device",),
    "api.GetDeviceRequest": ("dev_eui",),
    "api.GetDeviceResponse": ("device",),
    "api.UpdateDeviceRequest": ("device",),
    "api.DeleteDeviceRequest": ("dev_eui",),
    "api.ListDevicesRequest": ("application_id", "limit", "offset", "order_by"),
    "api.ListDevicesRequest.OrderBy": ("DEV_EUI",),
    "api.ListDevicesResponse": ("total_count", "result"),
    "api.DeviceListItem": ("dev_eui", "name", "tags"),
    "api.GetDeviceKeysRequest": ("dev_eui",),
    "api.GetDeviceActivationRequest": ("dev_eui",),
    "api.GetDeviceActivationResponse": ("device_activation", "join_server_context"),
    "api.DeviceActivation": ("dev_addr",),
    "api.GetDeviceNextFCntDownRequest": ("dev_eui",),
    "api.GetDeviceNextFCntDownResponse": ("f_cnt_down",),
    "api.DeviceQueueItem": ("dev_eui", "confirmed", "f_port", "data", "is_encrypted", "f_cnt_down"),
    "api.EnqueueDeviceQueueItemRequest": ("queue_item",),
    "api.EnqueueDeviceQueueItemResponse": ("id",),
    "api.GetDeviceProfileRequest": ("id",),
    "api.GetDeviceProfileResponse": ("device_profile",),
    "api.DeviceProfile": ("supports_otaa", "mac_version"),
    "common.MacVersion": ("LORAWAN_1_0_0", "LORAWAN_1_0_1", "LORAWAN_1_0_2", "LORAWAN_1_0_3", "LORAWAN_1_0_4",
                          "LORAWAN_1_1_0"),
    "common.JoinServerContext": ("session_key_id", "app_s_key"),
    "common.KeyEnvelope": ("kek_label", "aes_key"),
    "integration.UplinkEvent": ("deduplication_id", "time", "device_info", "dev_addr", "f_cnt", "f_port", "data",
                                "join_server_context"),
    "integration.JoinEvent": ("device_info", "dev_addr", "join_server_context"),
    "integration.DeviceInfo": ("application_id", "dev_eui"),
}

# ChirpStack's own configuration that `jsd chirpstack config` writes, with the release that brought each key
# (chirpstack/chirpstack, chirpstack/src/config.rs): key -> (first release, the commit that added it).
CONFIG_USES: Final[dict[str, tuple[str, str]]] = {
    "[[join_server.servers]] join_eui_prefix": ("4.6.0", "09e1ae02"),
    "[[join_server.servers]] server": ("4.0.0", ""),
    "[[join_server.servers]] async_timeout": ("4.0.0", "f27b8da3"),
    "[[join_server.servers]] authorization_header": ("4.12.0", "6d084b3b"),
    "[[join_server.servers]] ca_cert / tls_cert / tls_key": ("4.0.0", ""),
    "[[keks]] label / kek": ("4.0.0", ""),
    "end-to-end AppSKey (KEKLabel kept, joinServerContext in events)": ("4.6.0", "41d00cb6"),
}
