"""memvault: long-term, encrypted, per-user memory for AI assistants and agents."""

from memvault.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    Invalid,
    MemvaultError,
    NotFound,
    WrongMasterKey,
)
from memvault.model import Agent, GlobalContextEntry, Memory, Session, Turn, User
from memvault.vault import Vault

__all__ = [
    "Agent",
    "Conflict",
    "Forbidden",
    "GlobalContextEntry",
    "IntegrityError",
    "Invalid",
    "Memory",
    "MemvaultError",
    "NotFound",
    "Session",
    "Turn",
    "User",
    "Vault",
    "WrongMasterKey",
]
__version__ = "0.1.0"
