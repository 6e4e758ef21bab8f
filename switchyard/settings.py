"""All settings in one typed object. Environment variables use the SWITCHYARD_ prefix,
nested with a double underscore: SWITCHYARD_KAFKA__BOOTSTRAP=127.0.0.1:9092."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.cache import CacheSettings
from streams.config import DlqLimitSettings, KafkaSettings
from streams.limits import TenantLimitSettings
from workers.config import TierModel, WorkerSettings

__all__ = ["Settings", "get_settings", "KafkaSettings", "DlqLimitSettings", "TierModel", "WorkerSettings",
           "ClickHouseSettings", "RouterSettings", "RetrainSettings", "DlqLimits", "ApiSettings", "CacheSettings"]


class ClickHouseSettings(BaseModel):
    # chdb:///ABS/DIR for the in-process engine, http(s)://user:pass@host:8123/db for a server.
    # None: the in-process engine under the data dir.
    dsn: str | None = None
    sink_batch_size: int = 500
    sink_flush_seconds: float = 1.0
    # How often the sink recomputes the analytics views (infra/clickhouse/analytics.sql).
    analytics_refresh_seconds: int = Field(default=60, ge=1)


class RouterSettings(BaseModel):
    artifact_dir: Path | None = None  # None: the default artifact shipped in router/artifacts
    embed_batch_size: int = 32
    embed_max_wait_seconds: float = 0.05
    # Share of requests routed to a tier drawn at random, so retraining sees every tier's outcomes
    # (recorded with the propensity it corrects for). 0 disables exploration.
    explore_rate: float = Field(default=0.05, ge=0, le=1)


class RetrainSettings(BaseModel):
    """The retrain schedule of `switchyard up` and the options of every retrain."""

    enabled: bool = True
    every_feedback: int = Field(default=500, ge=1, description="retrain after this many new feedback rows")
    every_minutes: float = Field(default=180.0, gt=0, description="or after this long, if any feedback is new")
    drift_threshold: float = Field(default=0.5, gt=0, le=1, description="or when the live router's mix drift "
                                   "(total variation from its training mix) since the last verdict reaches this, "
                                   "if any feedback is new")
    drift_min_requests: int = Field(default=200, ge=1, description="decisions the drift trigger needs first")
    poll_seconds: float = Field(default=30.0, gt=0)
    holdout_share: float = Field(default=0.25, gt=0, lt=1)
    min_outcomes: int = Field(default=40, ge=1)
    quality_share: float = Field(default=0.95, gt=0, le=1)
    use_prior: bool = True
    prior_path: Path | None = None  # None: the shipped outcomes of the local models


class ApiSettings(BaseModel):
    """The OpenAI-compatible HTTP API (`switchyard api`, started by `switchyard up`)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback by default; every call needs a key either way
    port: int = Field(default=0, ge=0, le=65535, description="0: a free port, printed by `up`")
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    chat_timeout_seconds: float = Field(default=600.0, gt=0)


class DlqLimits(BaseModel):
    """Per stage: when to stop instead of dead-lettering on (off by default)."""

    router: DlqLimitSettings = Field(default_factory=DlqLimitSettings)
    worker: DlqLimitSettings = Field(default_factory=DlqLimitSettings)
    sink: DlqLimitSettings = Field(default_factory=DlqLimitSettings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", env_nested_delimiter="__")

    data_dir: Path = Path(".switchyard")
    # Loopback port of the sink's read endpoint (the sink owns the chDB directory).
    query_port: int = 0
    # Loopback port of each stage's Prometheus metrics (streams.metrics), by stage name; the
    # stack fills it in at start. A stage without one serves no metrics.
    metrics_ports: dict[str, int] = Field(default_factory=dict)
    # A tenant's API key (`switchyard keys create`): the CLI then acts as that tenant. Unset: the
    # operator, whose token is in the data dir (owner-only).
    api_key: str | None = Field(default=None, repr=False, exclude=True)  # never frozen to a file
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    dlq_limits: DlqLimits = Field(default_factory=DlqLimits)
    # Per-tenant request rates and completion-token budgets (streams.limits); unlimited by default.
    # SWITCHYARD_TENANT_LIMITS__TENANTS='{"acme": {"requests": "20/second", "completion_tokens": "50000/hour"}}'
    tenant_limits: TenantLimitSettings = Field(default_factory=TenantLimitSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    # The router's semantic cache (docs/cache.md): SWITCHYARD_CACHE__ENABLED=true,
    # SWITCHYARD_CACHE__SIMILARITY_THRESHOLD=0.95, SWITCHYARD_CACHE__TTL_S=86400, ...
    cache: CacheSettings = Field(default_factory=CacheSettings)

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


SETTINGS_FILE_ENV = "SWITCHYARD_SETTINGS_FILE"


def get_settings() -> Settings:
    """Settings from the environment; a stage started by the stack reads the stack's own
    settings, frozen to a file at start, so every process agrees on them. Called only in the
    composition root (the CLI); everything below it receives what it needs as arguments."""
    frozen = os.environ.get(SETTINGS_FILE_ENV)
    if frozen:
        return Settings.model_validate_json(Path(frozen).read_text())
    return Settings()
