"""Settings from the environment: a partial override of the tier models merges per tier."""
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from switchyard.settings import Settings
from workers.config import default_tier_models
from workers.tiers import price_table, served_models, served_tier

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example(variable: str) -> str:
    found = re.findall(rf"`{variable}='([^']*)'`", README.read_text())
    assert len(found) == 1, f"README.md should show one {variable} example, found {found}"
    return found[0]


def test_the_readme_override_of_one_tier_keeps_the_others(monkeypatch, tmp_path):
    monkeypatch.setenv("SWITCHYARD_WORKERS__MODELS", _readme_example("SWITCHYARD_WORKERS__MODELS"))
    settings = Settings(data_dir=tmp_path)
    defaults = default_tier_models()
    assert set(settings.workers.models) == {"small", "medium", "large"}
    assert settings.workers.models["small"] == defaults["small"]
    assert settings.workers.models["medium"] == defaults["medium"]
    large = settings.workers.models["large"]
    assert large.name == "llama-3.3-70b-instruct" and large.endpoint == "http://head:8000/tier-large/v1"
    # the fields it does not name are the default large tier's, prices included
    assert (large.price_per_mtok_in, large.price_per_mtok_out) == \
        (defaults["large"].price_per_mtok_in, defaults["large"].price_per_mtok_out)
    # every tier is still served: small and medium by their local models, large by the endpoint
    assert served_models(settings.workers) == {"small": "smollm2-135m", "medium": "qwen2.5-coder-0.5b",
                                              "large": "llama-3.3-70b-instruct"}
    assert served_tier("large", settings.workers).engine == "endpoint"
    assert set(price_table(settings.workers)) == {"small", "medium", "large"}
    # the stack freezes settings to a file for its stages: they read back the same
    assert Settings.model_validate_json(settings.model_dump_json()).workers.models == settings.workers.models


def test_one_field_of_one_tier_by_nested_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("SWITCHYARD_WORKERS__MODELS__LARGE__ENDPOINT", "http://head:8000/tier-large/v1")
    models = Settings(data_dir=tmp_path).workers.models
    defaults = default_tier_models()
    assert models["large"] == defaults["large"].model_copy(update={"endpoint": "http://head:8000/tier-large/v1"})
    assert models["small"] == defaults["small"] and models["medium"] == defaults["medium"]


def test_an_unknown_tier_is_refused_with_the_known_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("SWITCHYARD_WORKERS__MODELS", '{"lage": {"endpoint": "http://head:8000/v1"}}')
    with pytest.raises(ValidationError, match=re.escape("unknown tier(s) ['lage']; the tiers are ['small', 'medium', 'large']")):
        Settings(data_dir=tmp_path)


def test_no_override_is_the_defaults(tmp_path):
    assert Settings(data_dir=tmp_path).workers.models == default_tier_models()
