"""Settings in one typed object: defaults < `MEMVAULT_*` environment < explicit arguments.

Every setting is listed, with its variable, in docs/configuration.md; a test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEMVAULT_", extra="ignore")

    data: Path = Field(Path("./memvault-data"), description="Folder for the database and keyring.")
    master_key: str | None = Field(
        None,
        description="Base64 of 32 bytes. Unset: a key file `master.key` (mode 0600) in the folder.",
    )
    database_url: str | None = Field(
        None, description="postgresql://... to use PostgreSQL; unset: SQLite in the data folder."
    )
    max_content_bytes: int = Field(
        65536, ge=1, description="Largest turn content or memory text accepted, in bytes."
    )
    max_json_bytes: int = Field(
        65536, ge=1, description="Largest metadata, entities or tool payload, serialised."
    )
