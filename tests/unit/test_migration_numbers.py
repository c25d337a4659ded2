"""Migration revisions are numbered ``0001``, ``0002``... each on the one before: the schema
check reads a number above this release's head as a later revision that a newer release
applied (``migrate.is_later``), which a rolling upgrade runs its old replicas on."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from recorder.store.migrate import alembic_config, head_revision, is_later


def test_revisions_are_numbered_in_order_each_on_the_one_before() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    chain = list(reversed(list(scripts.walk_revisions())))
    assert [r.revision for r in chain] == [f"{n:04d}" for n in range(1, len(chain) + 1)]
    assert [r.down_revision for r in chain] == [None, *(r.revision for r in chain[:-1])]
    assert chain[-1].revision == head_revision()


def test_a_later_revision_is_a_higher_number() -> None:
    assert is_later("0005", "0004")
    assert is_later("0010", "0009")
    assert not is_later("0004", "0004")
    assert not is_later("0003", "0004")
    assert not is_later(None, "0004")  # no schema at all: to be migrated
    assert not is_later("0005", None)
    assert not is_later("abc123", "0004")  # not one of ours: not taken for a later one
