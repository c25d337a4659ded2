"""Credential sources (recorder/kube/credentials.py): token files re-read on a timer and on
refresh, with a fake clock; the best-effort JWT subject."""

from __future__ import annotations

from pathlib import Path

from recorder.kube.credentials import FileToken, jwt_subject
from tests.kube_support import Clock


def test_jwt_subject_is_best_effort() -> None:
    assert jwt_subject("not-a-jwt") is None
    assert jwt_subject("a.%%%.c") is None


# --- token files ------------------------------------------------------------------------------


def test_token_file_is_read_again_on_a_timer_and_on_refresh(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    clock = Clock()
    token = FileToken(path, "test", reread_seconds=60, clock=clock)
    path.write_text("two")
    assert token.current() == "one"  # cached
    clock.now += 60
    assert token.current() == "two"  # the timer
    path.write_text("three")
    assert token.refresh() and token.current() == "three"  # a 401
    assert not token.refresh()
    path.write_text("")  # caught mid-rotation: keep the last good token
    assert not token.refresh() and token.current() == "three"
    path.unlink()
    clock.now += 60
    assert token.current() == "three"
