import pytest

from ponder.thinking.extract import extract_answer, extract_boxed, extract_last_number


def test_boxed_with_nested_braces():
    assert extract_boxed(r"so \boxed{\frac{1}{2}} and later \boxed{x^{2}}") == "x^{2}"


def test_unbalanced_boxed_is_none():
    assert extract_boxed(r"\boxed{12") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 42.", "42"),
        ("Final answer: 1,234", "1234"),
        (r"we get \boxed{19}", "19"),
        ("first 3 then 5 then 19", "19"),
        ("Answer: **Paris**", "Paris"),
    ],
)
def test_auto(text, expected):
    assert extract_answer(text) == expected


def test_number_kind_normalizes():
    assert extract_answer("Final answer: 1,234.0 apples", kind="number") == "1234"
    assert extract_last_number("-3.50 then 7.000") == "7"


def test_choice():
    assert extract_answer("After all that, Answer: (C)", kind="choice") == "C"


def test_nothing_to_extract():
    assert extract_answer("", kind="number") is None
    assert extract_answer("no digits here", kind="number") is None
