#!/bin/sh
# Builds tests/data/releases/recorder-<commit>.tar.gz: a release of the recorder as the upgrade
# test runs it (tests/faults/test_rollout.py), laid out as the wheel installs it:
# recorder/ with the Alembic scripts inside as recorder/_migrations/ (pyproject.toml's
# package-dir), without the vendored docs assets (recorder/api/static/vendor: served on
# request, never read at start). Reproducible: files from `git archive`, fixed owner and
# times, no gzip name or timestamp.
#
# usage: tests/data/releases/build.sh [COMMIT]   (default 0b6e0e8, the previous release)
set -eu
commit=${1:-0b6e0e8}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$repo" archive --format=tar "$commit" recorder migrations \
    ':(exclude)recorder/api/static/vendor' | tar -x -C "$work"
mv "$work/migrations" "$work/recorder/_migrations"
find "$work" -name '__pycache__' -prune -exec rm -rf {} +
stamp=$(git -C "$repo" log -1 --format=%ct "$commit")
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$stamp" -cf - recorder \
    | gzip -9n > "$here/recorder-$commit.tar.gz"
echo "$here/recorder-$commit.tar.gz: $(wc -c < "$here/recorder-$commit.tar.gz") bytes"
