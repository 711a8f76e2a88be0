"""Settings in one typed object: defaults < `MEMVAULT_*` environment < explicit arguments.

Every setting is listed, with its variable, in docs/configuration.md; a test keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
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
    keyring_url: str | None = Field(
        None,
        description="postgresql://... for the wrapped data keys, ideally another database than "
        "the content; unset: beside the content (SQLite file, or the database_url database).",
    )
    database_pool_size: int = Field(
        8, ge=2, le=256, description="PostgreSQL connections each process keeps at most."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite fsync policy. FULL: a turn survives power loss once the call returns. "
        "NORMAL: survives a crash of memvault, may lose the last commits on power loss; faster.",
    )
    max_content_bytes: int = Field(
        65536, ge=1, description="Largest turn content or memory text accepted, in bytes."
    )
    max_json_bytes: int = Field(
        65536, ge=1, description="Largest metadata, entities or tool payload, serialised."
    )
    host: str = Field("127.0.0.1", description="Address `memvault serve` listens on.")
    port: int = Field(8765, ge=0, le=65535, description="Port `memvault serve` listens on.")
    admin_key: str | None = Field(
        None,
        min_length=16,
        description="An admin API key for deployments and scripts. Unset: `memvault serve` "
        "creates one on first start and prints it once.",
    )
    jwt_secret: str | None = Field(
        None,
        min_length=32,
        description="HS256 secret; when set, the API also accepts JWTs whose `sub` is a user id.",
    )
    max_body_bytes: int = Field(
        4_194_304, ge=1, description="Largest HTTP request body accepted (413 beyond), in bytes."
    )
    rate_limit_per_minute: int = Field(
        6000, ge=0, description="Requests per minute allowed for one API key (429 beyond); 0: off."
    )
    ws_idle_timeout: float = Field(
        60.0, gt=0, description="Seconds a WebSocket may stay silent (no ping) before it is closed."
    )
    ws_history_turns: int = Field(
        20, ge=0, le=1000, description="Recent turns sent to a WebSocket joining a session room."
    )
    consolidation_delay: float = Field(
        1800.0,
        ge=0,
        description="Seconds after a user's write that `memvault serve` consolidates them (a "
        "background job: promote, archive, merge memories; summarise idle sessions); 0: never.",
    )
    embedder: Literal["minilm", "hashing", "remote"] = Field(
        "minilm",
        description="Embedding model for search. minilm: local int8 ONNX, no network. remote: "
        "an OpenAI-compatible /embeddings endpoint (texts are sent there). hashing: tests only.",
    )
    embedding_url: str | None = Field(
        None, description="Base URL of the OpenAI-compatible endpoint, with embedder=remote."
    )
    embedding_model: str | None = Field(
        None, description="Model name to ask the endpoint for, with embedder=remote."
    )
    embedding_api_key: str | None = Field(
        None, description="Bearer key for the endpoint, with embedder=remote."
    )
    embedding_relevance_floor: float = Field(
        0.0, ge=0.0, le=1.0,
        description="With embedder=remote: the cosine under which an item without a query word "
        "is no match (MiniLM's is 0.2). 0: any positive cosine matches.",
    )  # fmt: skip
    model_cache: Path | None = Field(
        None,
        description="Folder for the query model memvault derives from MiniLM on first use; "
        "unset: $XDG_CACHE_HOME/memvault or ~/.cache/memvault.",
    )
    index_cache_bytes: int = Field(
        1 << 30, ge=1, description="Memory for per-user search indexes, in bytes (LRU beyond)."
    )
    ann_threshold: int = Field(
        10_000, ge=1, description="Items per user from which search uses an HNSW index."
    )
    warm_indexes: bool = Field(
        True,
        description="Top up a user's search index on a background thread after each write, so "
        "the next search does not wait for what was written to be embedded; false: it waits.",
    )
    graph_builds: bool = Field(
        True,
        description="Build HNSW indexes in a separate process, searching exactly meanwhile; "
        "false: build them inline, in the search that needs one.",
    )
    llm_url: str | None = Field(
        None,
        description="Base URL of the OpenAI-compatible LLM the chat proxy forwards to "
        "(https://api.openai.com/v1); unset: the proxy answers 503.",
    )
    llm_api_key: SecretStr | None = Field(
        None, description="Bearer key sent to the LLM at llm_url; never logged or echoed."
    )
    llm_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds the chat proxy and consolidation wait for the LLM (each read).",
    )
    llm_model: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Model consolidation asks the LLM at llm_url for, to summarise idle "
        "sessions and read the user's facts (their turns are sent there); unset: rules only.",
    )

    @model_validator(mode="after")
    def _remote_embedder_is_complete(self) -> Settings:
        if self.embedder == "remote" and not (self.embedding_url and self.embedding_model):
            raise ValueError("embedder=remote needs embedding_url and embedding_model")
        return self

    @field_validator("llm_url")
    @classmethod
    def _llm_url_is_http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url
