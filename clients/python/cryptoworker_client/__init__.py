"""Resume-correct asyncio client for the cryptoworker WebSocket event server."""

from .client import (
    AuthError,
    CryptoworkerClient,
    CryptoworkerError,
    Event,
    Gap,
    GiveUpError,
    Position,
    Resync,
    ResyncNeeded,
    SubscribeError,
)

__all__ = [
    "AuthError",
    "CryptoworkerClient",
    "CryptoworkerError",
    "Event",
    "Gap",
    "GiveUpError",
    "Position",
    "Resync",
    "ResyncNeeded",
    "SubscribeError",
]
