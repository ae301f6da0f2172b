"""Settings read from the environment (prefix CHATLOOP_), typed with pydantic-settings.

    CHATLOOP_HOME          where models, runs and the SQLite database live (default ~/.chatloop)
    CHATLOOP_DATABASE_URL  overrides the database (default sqlite:///$CHATLOOP_HOME/chatloop.db)
    CHATLOOP_RATE_LIMIT_PER_MINUTE, CHATLOOP_MAX_BODY_BYTES, CHATLOOP_MAX_WAITING   server limits
"""

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATLOOP_", extra="ignore")

    home: Path = Field(default=Path("~/.chatloop"), description="Root of models/, runs/ and chatloop.db.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in home by default.")
    rate_limit_per_minute: int = Field(default=600, description="Requests per minute per user and per API key.")
    max_body_bytes: int = Field(default=1 << 20, description="Largest accepted request body (413 above).")
    max_waiting: int = Field(default=64, description="Requests queued for the engine before 503 overloaded.")

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def runs_dir(self) -> Path:
        return self.home_dir / "runs"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'chatloop.db'}"


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; tests change env between calls)."""
    return Settings()
