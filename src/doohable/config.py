"""Runtime settings, read from the environment (``DOOHABLE_*``); see docs/CONTRACT in README."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every runtime setting in one place. Secrets are ``SecretStr`` and never logged."""

    model_config = SettingsConfigDict(env_prefix="DOOHABLE_", extra="ignore")

    home: Path = Path(".doohable")
    database_url: str | None = None
    blob_url: str | None = None
    model: str | None = None  # scorer name or path; None = the bundled default

    # image decoding limits (see doohable.images)
    max_image_bytes: int = 30 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    max_image_side: int = 20_000
    near_duplicate_distance: int = 6  # perceptual-hash Hamming distance (of 64 bits) for a near-duplicate

    # crash recovery: at start-up, `serve` deletes blobs no row references that are older than this
    orphan_blob_grace_s: float = 300.0

    # URL ingest
    url_timeout_s: float = 10.0
    url_allow_private: bool = False  # only for tests that serve images on loopback

    # web app
    secret_key: SecretStr | None = None  # signs image URLs and session cookies; generated in home if unset
    signed_url_ttl_s: int = 3600

    # Slack
    slack_signing_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_api_url: str | None = None  # override for tests (local fake Slack API)

    # moderation
    auto_approve_threshold: float | None = None

    threads: int = Field(default=0, description="ONNX Runtime intra-op threads; 0 = number of cores")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'doohable.db').resolve()}"

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or f"file://{(self.home / 'blobs').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
