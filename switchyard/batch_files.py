"""Lines of OpenAI Batch output and error files, for the CLI's --out/--errors and the API alike."""
from __future__ import annotations

import json
from typing import Any


def output_line(request_id: str, custom_id: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"batch_req_{request_id}", "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": response}, "error": None}


def error_line(request_id: str | None, custom_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"id": f"batch_req_{request_id}" if request_id else None, "custom_id": custom_id,
            "response": None, "error": {"code": code, "message": message}}


def dead_letter_line(original: str, reason: str) -> dict[str, Any]:
    """An error line for a request that was dead-lettered; its custom_id when the line has one."""
    custom_id = None
    try:
        parsed = json.loads(original)
        if isinstance(parsed, dict) and isinstance(parsed.get("custom_id"), str):
            custom_id = parsed["custom_id"]
    except (ValueError, RecursionError):
        pass
    return error_line(None, custom_id, "invalid_request", reason)
