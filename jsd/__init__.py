"""LoRaWAN Join Server daemon."""

__version__ = "0.1.0"
