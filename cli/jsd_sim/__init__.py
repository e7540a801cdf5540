"""Simulated LoRaWAN end devices and a home network server that speaks Backend Interfaces 1.0.

An independent check of a Join Server: imports only the standard library, ``cryptography``, ``aiohttp``
and ``click``, never the daemon (``jsd``).
"""

from jsd_sim.device import AcceptError, DevNonceExhausted, DeviceSession, SessionKeys, SimDevice

__all__ = ["AcceptError", "DevNonceExhausted", "DeviceSession", "SessionKeys", "SimDevice"]
