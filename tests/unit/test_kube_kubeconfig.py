"""Reading kubeconfig files as kubectl does (recorder/kube/kubeconfig.py): merging several files,
the current context, relative paths, and broken files that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recorder.errors import ConfigError
from tests.kube_support import PEM_CA, config_file, headers, load, write

# --- merging several files ----------------------------------------------------------------


def test_first_file_wins_for_each_name_and_for_current_context(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a" / "config",
        config_file(
            clusters={"prod": {"server": "https://prod-a:6443"}},
            users={"alice": {"token": "from-a"}},
            contexts={"prod": {"cluster": "prod", "user": "alice"}},
            current="prod",
        ),
    )
    second = write(
        tmp_path / "b" / "config",
        config_file(
            # Same names: ignored entirely, even fields the first file lacks.
            clusters={
                "prod": {"server": "https://prod-b:6443", "tls-server-name": "b"},
                "dev": {"server": "https://dev:6443"},
            },
            users={"alice": {"token": "from-b"}, "bob": {"token": "bob-token"}},
            contexts={"dev": {"cluster": "dev", "user": "bob"}},
            current="dev",
        ),
    )
    environ = {"KUBECONFIG": f"{first}:{tmp_path / 'missing'}::{second}:{first}"}
    chosen = load(environ=environ)
    assert chosen.server == "https://prod-a:6443"
    assert chosen.tls.server_name is None
    assert headers(chosen) == {"Authorization": "Bearer from-a"}
    assert "context 'prod'" in chosen.source
    other = load(environ=environ, context="dev")
    assert other.server == "https://dev:6443"
    assert headers(other) == {"Authorization": "Bearer bob-token"}


def test_current_context_comes_from_the_first_file_that_sets_it(tmp_path: Path) -> None:
    first = write(
        tmp_path / "1", config_file(clusters={"c1": {"server": "https://one"}}, current=None)
    )
    second = write(
        tmp_path / "2",
        config_file(
            clusters={"c2": {"server": "https://two"}},
            contexts={"x": {"cluster": "c1"}, "y": {"cluster": "c2"}},
            current="x",
        ),
    )
    third = write(tmp_path / "3", config_file(current="y"))
    chosen = load(environ={"KUBECONFIG": f"{first}:{second}:{third}"})
    assert chosen.server == "https://one"
    assert chosen.credentials is None  # a context without a user is anonymous


def test_relative_paths_resolve_against_the_file_that_defines_them(tmp_path: Path) -> None:
    pair = PEM_CA.issue_client("someone")
    (tmp_path / "clusters" / "pki").mkdir(parents=True)
    (tmp_path / "clusters" / "pki" / "ca.crt").write_bytes(PEM_CA.cert_pem)
    (tmp_path / "users" / "creds").mkdir(parents=True)
    (tmp_path / "users" / "creds" / "tls.crt").write_bytes(pair.cert_pem)
    (tmp_path / "users" / "creds" / "tls.key").write_bytes(pair.key_pem)
    (tmp_path / "users" / "creds" / "token").write_text("file-token\n")
    clusters = write(
        tmp_path / "clusters" / "config",
        config_file(
            clusters={"c": {"server": "https://c", "certificate-authority": "pki/ca.crt"}},
            contexts={"c": {"cluster": "c", "user": "u"}},
            current="c",
        ),
    )
    users = write(
        tmp_path / "users" / "config",
        config_file(
            users={
                "u": {
                    "client-certificate": "creds/tls.crt",
                    "client-key": "creds/tls.key",
                    "tokenFile": "creds/token",
                }
            }
        ),
    )
    chosen = load(environ={"KUBECONFIG": f"{clusters}:{users}"})
    assert chosen.tls.ca_pem == PEM_CA.cert_pem
    assert str(tmp_path / "clusters" / "pki" / "ca.crt") in chosen.tls.ca_source
    assert headers(chosen) == {"Authorization": "Bearer file-token"}
    assert chosen.credentials is not None
    certificate = chosen.credentials.certificate()
    assert certificate is not None and certificate.cert_pem == pair.cert_pem


def test_explicit_kubeconfig_must_exist_and_is_not_merged(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(kubeconfig=str(tmp_path / "nope"))
    only = write(
        tmp_path / "only",
        config_file(
            clusters={"c": {"server": "https://explicit"}},
            contexts={"c": {"cluster": "c"}},
            current="c",
        ),
    )
    env_file = write(tmp_path / "env", config_file(current="other"))
    assert load(kubeconfig=str(only), environ={"KUBECONFIG": str(env_file)}).server == (
        "https://explicit"
    )


def test_kubeconfig_list_with_no_existing_file_names_the_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={"KUBECONFIG": f"{tmp_path / 'a'}:{tmp_path / 'b'}"})
    assert str(caught.value).startswith(
        f"KUBECONFIG names no kubeconfig that exists (not found: {tmp_path / 'a'}, "
        f"{tmp_path / 'b'})"
    )


def test_a_context_missing_from_a_kubeconfig_list_names_the_missing_files(
    tmp_path: Path,
) -> None:
    present = write(tmp_path / "present", config_file(contexts={"a": {"cluster": "x"}}))
    listed = f"{tmp_path / 'gone'}:{present}"
    with pytest.raises(ConfigError) as caught:
        load(environ={"KUBECONFIG": listed}, context="b")
    assert f"({present}; not found: {tmp_path / 'gone'})" in str(caught.value)


@pytest.mark.parametrize(
    ("document", "context", "message"),
    [
        (config_file(), None, "has no current-context: pass --context"),
        (config_file(contexts={"a": {"cluster": "x"}}), "b", "context 'b' is not defined"),
        (config_file(contexts={"a": {"cluster": "x"}}, current="a"), None, "cluster 'x'"),
        (
            config_file(
                clusters={"x": {"server": "https://x"}},
                contexts={"a": {"cluster": "x", "user": "ghost"}},
                current="a",
            ),
            None,
            "user 'ghost'",
        ),
        (
            config_file(clusters={"x": {}}, contexts={"a": {"cluster": "x"}}, current="a"),
            None,
            "has no server",
        ),
        (
            config_file(
                clusters={"x": {"server": "ftp://x"}}, contexts={"a": {"cluster": "x"}}, current="a"
            ),
            None,
            "http:// or https:// URL",
        ),
        ({"clusters": [{"cluster": {}}]}, None, r"clusters\[0\] .* has no name"),
    ],
)
def test_broken_kubeconfigs_say_what_is_wrong(
    tmp_path: Path, document: dict[str, Any], context: str | None, message: str
) -> None:
    path = write(tmp_path / "config", document)
    with pytest.raises(ConfigError, match=message):
        load(kubeconfig=str(path), context=context)


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("clusters: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(kubeconfig=str(path))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("users:\n- name: u\n  user:\n    token: s3cret-token: [oops\n", "line 4, column 24"),
        ("users:\n- name: u\n  user: {token: s3cret-token\n", "line 4, column 1"),
        ("users: *s3cret-token\n", "line 1, column 8: found undefined alias ..."),
        ("users:\n\ttoken: s3cret-token\n", "line 2, column 1: found character '\\t'"),
    ],
)
def test_broken_yaml_says_where_but_never_echoes_the_line(
    tmp_path: Path, text: str, where: str
) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(kubeconfig=str(path))
    message = str(caught.value)
    assert message.startswith(f"the kubeconfig {path} is not valid YAML: {where}"), message
    assert "s3cret" not in message
    assert caught.value.__cause__ is None  # nor does a chained YAMLError
