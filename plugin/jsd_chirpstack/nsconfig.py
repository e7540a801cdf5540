"""The ChirpStack configuration that routes joins to our Join Server, with ChirpStack's traps as comments.

Rendered as text (not through a TOML writer) because the comments are the point: each one is a way a
working-looking file silently fails (docs/chirpstack.md, "Configuring ChirpStack").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PREFIX = re.compile(r"^[0-9a-fA-F]{16}(/([0-9]|[1-5][0-9]|6[0-4]))?$")
_DURATION = re.compile(r"^\d+(ms|s|m)$")


@dataclass(frozen=True)
class JoinServerEntry:
    """One ``[[join_server.servers]]`` entry and the NS KEK; exactly one of ``token`` or TLS files."""

    join_eui_prefix: str
    server: str
    kek_label: str
    kek: bytes = field(repr=False)
    token: str | None = field(default=None, repr=False)
    ca_cert: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    async_timeout: str = "0s"
    net_id: str | None = None

    def check(self) -> None:
        """Refuse what ChirpStack would accept and then misuse."""
        if not _PREFIX.match(self.join_eui_prefix):
            raise ValueError("join_eui_prefix is 16 hex digits, optionally /0../64 (e.g. 70b3d57ed0000000/56)")
        if not self.server.startswith(("http://", "https://")):
            raise ValueError("server is the Join Server's URL (http:// or https://), used as is")
        if len(self.kek) != 16:
            raise ValueError("ChirpStack's [[keks]] are AES-128: the KEK is 16 bytes (32 hex digits)")
        if not self.kek_label or '"' in self.kek_label or "$" in self.kek_label:
            raise ValueError("kek_label must be non-empty, without quotes or '$'")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (ChirpStack ignores one without the other)")
        if self.token is None and self.tls_cert is None:
            raise ValueError("give the NS's bearer token or its TLS client certificate: the Join Server needs one")
        if self.token is not None and ("$" in self.token or '"' in self.token or "\n" in self.token):
            raise ValueError("the token contains '$', a quote or a newline, which ChirpStack's config cannot carry")
        if not _DURATION.match(self.async_timeout):
            raise ValueError("async_timeout is a duration such as 0s, 500ms or 2s")
        if self.net_id is not None and not re.fullmatch(r"[0-9a-fA-F]{6}", self.net_id):
            raise ValueError("net_id is 6 hex digits")


def render(entry: JoinServerEntry) -> str:
    """The TOML text for a file of its own in ChirpStack's configuration directory."""
    entry.check()
    lines = [
        "# jsd Join Server for ChirpStack v4.12 or later (authorization_header first appears in v4.12.0; see",
        "# docs/chirpstack.md). ChirpStack asks an external Join Server for every device that has no keys of its",
        "# own, and keeps KEK-wrapped AppSKeys end-to-end for the application.",
        "#",
        "# Save this as a file of its own in ChirpStack's configuration directory (chirpstack -c DIR), e.g.",
        "# DIR/join_server.toml. ChirpStack concatenates every *.toml of DIR as text: define [join_server] and",
        "# [[keks]] in no other file, and keep the final newline. A dollar sign followed by the name of an",
        "# environment variable is replaced by its value anywhere in DIR, comments included.",
        "# ChirpStack reads its configuration only at start: restart it after changing this file.",
        "# Devices must have NO keys in ChirpStack (the 'Keys (OTAA)' tab empty): with keys it never asks us.",
    ]
    if entry.net_id:
        lines += [
            "#",
            f"# [network] net_id must be \"{entry.net_id.lower()}\": ChirpStack sends it as SenderID, and the Join",
            "# Server checks it against the NetID registered for this credential.",
        ]
    lines += [
        "",
        "[[join_server.servers]]",
        "  # First matching prefix wins, in file order: put a catch-all (0000000000000000/0) last.",
        f'  join_eui_prefix = "{entry.join_eui_prefix.lower()}"',
        "  # POSTed to exactly this URL; nothing is appended.",
        f'  server = "{entry.server}"',
        "  # 0s = synchronous. ChirpStack's own template shows async_interface / async_interface_timeout:",
        "  # stale keys, silently ignored. A JoinAns slower than 5 s fails whatever this says.",
        f'  async_timeout = "{entry.async_timeout}"',
    ]
    if entry.token is not None:
        lines += [
            "  # Sent verbatim as the Authorization header (ChirpStack v4.12+).",
            f'  authorization_header = "Bearer {entry.token}"',
        ]
    if entry.ca_cert:
        lines += ["  # CA of the Join Server's HTTPS certificate.", f'  ca_cert = "{entry.ca_cert}"']
    if entry.tls_cert and entry.tls_key:
        lines += [
            "  # mTLS client identity (key in PKCS#8 PEM); the Join Server maps its fingerprint to the NetID.",
            f'  tls_cert = "{entry.tls_cert}"',
            f'  tls_key = "{entry.tls_key}"',
        ]
    lines += [
        "",
        "[[keks]]",
        "  # The label the Join Server wraps the network session keys under (the NS's kek_label in jsd). A label",
        "  # ChirpStack does not know fails every join ('KEK label ... does not exist'), with no event.",
        f'  label = "{entry.kek_label}"',
        f'  kek = "{entry.kek.hex()}"',
        "",
        "# No [[keks]] entry for the application's ASTK: ChirpStack never needs it. The AppSKey stays wrapped and",
        "# reaches the application in joinServerContext of every 'up' event (jsd chirpstack appserver).",
        "",
    ]
    return "\n".join(lines)
