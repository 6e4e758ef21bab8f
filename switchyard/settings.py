"""All settings in one typed object. Environment variables use the SWITCHYARD_ prefix,
nested with a double underscore: SWITCHYARD_KAFKA__BOOTSTRAP=127.0.0.1:9092."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    # Embedded broker: group joins wait half the session timeout, so keep it short.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1500


class ClickHouseSettings(BaseModel):
    # chdb:///ABS/DIR for the in-process engine, http(s)://user:pass@host:8123/db for a server.
    # None: the in-process engine under the data dir.
    dsn: str | None = None
    sink_batch_size: int = 500
    sink_flush_seconds: float = 1.0


class TierModel(BaseModel):
    """One tier's local model: a GGUF shipped inside PyPI packages."""

    name: str
    context_tokens: int = 2048
    parallel_slots: int = 2
    threads: int = 1
    price_per_mtok_in: float
    price_per_mtok_out: float
    # An OpenAI-compatible endpoint (e.g. a Ray Serve LLM app, http://head:8000/tier-large/v1)
    # serves this tier instead of the local GGUF when set; the model id sent is `endpoint_model`.
    endpoint: str | None = None
    endpoint_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    request_timeout_seconds: float = 600.0


def _default_tiers() -> dict[str, TierModel]:
    # Prices are the list prices of comparable hosted models, used for the cost estimate.
    return {
        "small": TierModel(name="smollm2-135m", price_per_mtok_in=0.02, price_per_mtok_out=0.04),
        "medium": TierModel(name="qwen2.5-coder-0.5b", price_per_mtok_in=0.10, price_per_mtok_out=0.20),
        "large": TierModel(name="qwen2.5-coder-1.5b", price_per_mtok_in=0.50, price_per_mtok_out=1.00),
    }


class WorkerSettings(BaseModel):
    # "serve": the tier worker calls a Ray Serve deployment; "inprocess": loads the model itself.
    engine: Literal["serve", "inprocess"] = "serve"
    # Lean mode for tests: every tier is served by the small model.
    all_tiers_small: bool = False
    max_tokens_cap: int = 256
    models: dict[str, TierModel] = Field(default_factory=_default_tiers)
    model_dir: Path = Path.home() / ".cache" / "switchyard" / "models"
    ray_temp_dir: Path = Path("/tmp/switchyard-ray")
    ray_num_cpus: float = 2.0
    # Set by the stack for its stages: the GCS address of the Ray cluster running Serve.
    ray_address: str | None = None


class RouterSettings(BaseModel):
    artifact_dir: Path | None = None  # None: the default artifact shipped in router/artifacts
    embed_batch_size: int = 32
    embed_max_wait_seconds: float = 0.05


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", env_nested_delimiter="__")

    data_dir: Path = Path(".switchyard")
    # Loopback port of the sink's read-only query endpoint (the sink owns the chDB directory).
    query_port: int = 0
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


SETTINGS_FILE_ENV = "SWITCHYARD_SETTINGS_FILE"


def get_settings() -> Settings:
    """Settings from the environment; a stage started by the stack reads the stack's own
    settings, frozen to a file at start, so every process agrees on them."""
    import os

    frozen = os.environ.get(SETTINGS_FILE_ENV)
    if frozen:
        return Settings.model_validate_json(Path(frozen).read_text())
    return Settings()
