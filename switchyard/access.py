"""What a CLI caller may touch: a tenant's key reaches that tenant's jobs only; the operator
(who holds the data dir's token) reaches everything and alone retrains or replays."""
from __future__ import annotations

from switchyard.console import fail
from switchyard.settings import Settings
from switchyard.warehouse import Warehouse, WarehouseError


def open_warehouse(settings: Settings) -> Warehouse:
    if settings.clickhouse.dsn is None and not (settings.data_dir / "clickhouse").exists():
        # no stack ever stored anything here: say so, rather than query an empty engine (a traceback)
        fail(f"no running stack and nothing stored in {settings.data_dir}: start one with `switchyard up`, "
             f"or set SWITCHYARD_DATA_DIR to a stack's data dir")
    try:
        return Warehouse.open(settings)
    except WarehouseError as exc:
        fail(str(exc))


def require_own_job(settings: Settings, job_id: str) -> None:
    """With a tenant's key, `job_id` must be one of that tenant's jobs; another tenant's job is
    answered exactly like one that does not exist."""
    if not settings.api_key:
        return
    wh = open_warehouse(settings)
    try:
        counts = wh.ask("job_status", job=job_id)[0]
    except WarehouseError as exc:
        fail(str(exc))
    finally:
        wh.close()
    if not counts["requests"]:
        fail(f"no job {job_id}", code=1)


def require_operator(settings: Settings, what: str) -> None:
    if settings.api_key:
        fail(f"{what} is the operator's; unset SWITCHYARD_API_KEY")
