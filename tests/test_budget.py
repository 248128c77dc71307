import pytest

from ponder.errors import BudgetError
from ponder.thinking.budget import DEFAULT_EFFORTS, EffortTable, resolve_budget


def table():
    return EffortTable()


@pytest.mark.parametrize("effort", sorted(DEFAULT_EFFORTS))
def test_tiers_map_to_caps(effort):
    b = resolve_budget(table(), effort=effort)
    assert b.max_tokens == DEFAULT_EFFORTS[effort]
    assert b.effort == effort


def test_default_effort_used_when_request_silent():
    assert resolve_budget(table(), effort=None, default_effort="low").max_tokens == 256


def test_explicit_max_overrides_tier():
    b = resolve_budget(table(), effort="high", max_thinking_tokens=32)
    assert b.max_tokens == 32
    assert b.effort is None


def test_min_kept():
    assert resolve_budget(table(), effort="low", min_thinking_tokens=100).min_tokens == 100


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"effort": "huge"}, "reasoning_effort"),
        ({"effort": "low", "max_thinking_tokens": -1}, "max_thinking_tokens"),
        ({"effort": "low", "max_thinking_tokens": 10**9}, "max_thinking_tokens"),
        ({"effort": "low", "min_thinking_tokens": -3}, "min_thinking_tokens"),
        ({"effort": "low", "min_thinking_tokens": 300}, "min_thinking_tokens"),
        ({"effort": "low", "max_thinking_tokens": "12"}, "max_thinking_tokens"),
    ],
)
def test_bad_budgets_name_the_parameter(kwargs, param):
    with pytest.raises(BudgetError) as err:
        resolve_budget(table(), **kwargs)
    assert err.value.param == param


def test_custom_table_validates():
    with pytest.raises(BudgetError):
        EffortTable(caps={"low": -1}).validate()
