"""The one exception hierarchy: every class has its own reason, and the drawing at the top of
``errors.py`` is the real hierarchy."""

from __future__ import annotations

import inspect
import re

import pytest

from recorder import errors

CLASSES = sorted(
    (
        value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, errors.RecorderError)
        and value.__module__ == errors.__name__
    ),
    key=lambda cls: cls.__name__,
)

_DRAWN = re.compile(r"^(?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>[A-Z]\w*)(?:\s|$)")


def drawn_tree(docstring: str) -> dict[str, str | None]:
    """Each class drawn in the docstring, with the class drawn as its parent."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    lines = docstring.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "RecorderError")
    for line in lines[start:]:
        stripped = line[4:] if line.startswith("    ") else line
        if not stripped.strip():
            break
        match = _DRAWN.match(stripped)
        assert match, f"cannot read the drawing's line {line!r}"
        depth = len(match["indent"]) // 4 + (0 if stripped.startswith("RecorderError") else 1)
        del stack[depth:]
        parents[match["name"]] = stack[-1] if stack else None
        stack.append(match["name"])
    return parents


def test_every_class_has_a_reason_of_its_own() -> None:
    reasons = {cls.__name__: cls.reason for cls in CLASSES}
    assert all(isinstance(r, str) and r for r in reasons.values()), reasons
    assert all(re.fullmatch(r"[a-z_]+", r) for r in reasons.values()), reasons
    by_reason: dict[str, list[str]] = {}
    for name, reason in reasons.items():
        by_reason.setdefault(reason, []).append(name)
    assert {r: n for r, n in by_reason.items() if len(n) > 1} == {}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_an_instance_carries_its_class_reason(cls: type[errors.RecorderError]) -> None:
    assert cls("message").reason == cls.reason


def test_the_drawing_is_the_real_hierarchy() -> None:
    assert errors.__doc__ is not None
    drawn = drawn_tree(errors.__doc__)
    real = {
        cls.__name__: next(
            (b.__name__ for b in cls.__bases__ if issubclass(b, errors.RecorderError)), None
        )
        for cls in CLASSES
    }
    assert drawn == real


def test_the_drawing_reader_sees_nesting() -> None:
    drawing = """
    RecorderError
    ├── A                 one
    │   └── B             two
    └── C                 three
        └── D             four
"""
    assert drawn_tree(drawing) == {
        "RecorderError": None,
        "A": "RecorderError",
        "B": "A",
        "C": "RecorderError",
        "D": "C",
    }
