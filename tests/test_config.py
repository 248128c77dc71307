from pathlib import Path

import pytest

from ponder.config import config_from_dict, load_config
from ponder.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_is_valid():
    c = load_config(ROOT / "ponder.example.yaml")
    assert c.lane(None).name == "reasoning" and c.lane("fast").effort == "none"
    assert c.thinking.efforts["medium"] == 1024
    assert c.policy == "default" and c.server.shedding.floor == "low"


def test_shedding_marks_must_increase():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"server": {"shedding": {"queue_marks": [8, 4]}}})
    assert "server.shedding" in e.value.message


@pytest.mark.parametrize("data, key", [
    ({"lanes": [{"name": "a", "prices": {"inptu_per_1m": 1}}]}, "lanes.0.prices.inptu_per_1m"),
    ({"server": {"port": "eighty"}}, "server.port"),
    ({"lanes": [{"name": "x", "backend": "openai"}]}, "lanes.0"),
    ({"lanes": [{"name": "a"}, {"name": "a"}]}, "duplicate lane"),
    ({"lanes": [{"name": "a", "effort": "ultra"}]}, "ultra"),
    ({"server": {"progress_interval_s": 5}}, "server.progress_interval_s"),
    ({"bogus": 1}, "bogus"),
])
def test_invalid_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert key in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_prices_bill_thinking_as_output_and_tool_results_as_input():
    from ponder.pricing import price
    from ponder.types import Usage

    c = config_from_dict({"lanes": [{"name": "a", "prices": {"input_per_1m": 2, "output_per_1m": 8,
                                                             "cached_input_per_1m": 1}}]})
    u = Usage(prompt_tokens=1000, cached_prompt_tokens=400, thinking_tokens=300, answer_tokens=200, tool_tokens=50)
    # 600 fresh + 50 tool tokens at 2, 400 cached at 1, 500 generated at 8
    assert price(u, c.lane("a").prices) == pytest.approx((650 * 2 + 400 * 1 + 500 * 8) / 1e6)
