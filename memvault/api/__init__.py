"""The HTTP and WebSocket server: `create_app(vault, settings)`."""

from memvault.api.app import create_app

__all__ = ["create_app"]
