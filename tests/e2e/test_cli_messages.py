"""A user's mistake gets one clear line naming what they typed and exit code 2, never a
traceback nor pydantic's or uvicorn's raw text (issue 12)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port, run_recorder

pytestmark = pytest.mark.slow

RAW = ("Traceback", "validation error", "Value error", "input_value", "Input should", "[Errno")


def one_error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The single ``recorder <command>: error: ...`` line of a failed run, which exited 2."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    output = result.stdout + result.stderr
    assert not [raw for raw in RAW if raw in output], output
    errors = [line for line in output.splitlines() if line.startswith(f"recorder {command}: ")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.mark.parametrize("command", ["poll", "run", "demo", "migrate", "query", "simulate"])
def test_a_bad_log_level_flag_is_an_argparse_error(command: str, tmp_path: Path) -> None:
    result = run_recorder([command, "--log-level", "LOUD"], tmp_path)
    line = one_error_line(result, command)
    assert line == (
        f"recorder {command}: error: argument --log-level: 'LOUD' is not a log level: "
        "use DEBUG, INFO, WARNING, ERROR"
    )
    assert result.stderr.startswith("usage: recorder ")


def test_a_bad_log_level_variable_names_the_variable(tmp_path: Path) -> None:
    result = run_recorder(["poll"], tmp_path, env={"RECORDER_LOG_LEVEL": "LOUD"})
    assert one_error_line(result, "poll") == (
        "recorder poll: error: RECORDER_LOG_LEVEL: 'LOUD' is not a log level: "
        "use DEBUG, INFO, WARNING, ERROR"
    )
    quiet = run_recorder(["migrate"], tmp_path, env={"RECORDER_LOG_LEVEL": "warning"})
    assert quiet.returncode == 0, quiet.stderr  # any case


def test_simulate_refuses_a_kubeconfig_it_cannot_write_before_serving(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "folder" / "kc"
    result = run_recorder(
        ["simulate", "--listen", f"127.0.0.1:{free_port()}", "--write-kubeconfig", str(target)]
    )
    assert one_error_line(result, "simulate") == (
        f"recorder simulate: error: --write-kubeconfig {target}: the folder {target.parent} "
        f"does not exist; create it first (mkdir -p {target.parent})"
    )
    assert not (tmp_path / "missing").exists()  # nothing created on the way


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process-like listener holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    ("command", "args", "what"),
    [
        ("run", ["--api-url", "http://127.0.0.1:1"], "recorder"),
        ("demo", [], "recorder"),
        ("simulate", [], "simulator"),
    ],
)
def test_a_port_in_use_is_one_line_and_nothing_starts(
    command: str, args: list[str], what: str, taken_port: int, tmp_path: Path
) -> None:
    result = run_recorder([command, *args, "--listen", f"127.0.0.1:{taken_port}"], tmp_path)
    assert one_error_line(result, command) == (
        f"recorder {command}: error: cannot listen on 127.0.0.1:{taken_port}: address already "
        f"in use (is another {what} running? choose another with --listen)"
    )
    assert result.stdout == ""  # demo's banner is printed once it listens, not before
    assert list(tmp_path.iterdir()) == []  # no database was created or migrated


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["--interval", "0"],
            {},
            "recorder poll: error: argument --interval: '0' must be longer than zero, e.g. 30s",
        ),
        (
            [],
            {"RECORDER_INTERVAL": "soon"},
            "recorder poll: error: RECORDER_INTERVAL: 'soon' is not a duration",
        ),
        (
            ["--cluster", "prod eu"],
            {"RECORDER_CLUSTER": "fine"},
            "recorder poll: error: --cluster: must be a Kubernetes label value",
        ),
        (
            [],
            {"RECORDER_CLUSTER": "prod eu"},
            "recorder poll: error: RECORDER_CLUSTER: must be a Kubernetes label value",
        ),
        (
            [],
            {"RECORDER_BLOCK": "10s"},
            "recorder poll: error: RECORDER_BLOCK: must be at least 1m",
        ),
        (
            [],
            {"RECORDER_MAX_POINTS": "lots"},
            "recorder poll: error: RECORDER_MAX_POINTS: must be a whole number, got 'lots'",
        ),
        (
            ["--api-url", "localhost:8001"],
            {},
            "recorder poll: error: --api-url: must be an http:// or https:// URL",
        ),
    ],
)
def test_settings_errors_name_what_the_user_typed(
    args: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    line = one_error_line(run_recorder(["poll", *args], tmp_path, env=env), "poll")
    assert line.startswith(expected), line
    flag = args[0] if args else None
    variables = [v for v in env if env[v] != "fine"]
    if flag:  # the flag was typed: the variable is not blamed
        assert f"RECORDER_{flag.removeprefix('--').upper().replace('-', '_')}" not in line
    for variable in variables:  # the variable was set: the flag is not blamed
        assert f"--{variable.removeprefix('RECORDER_').lower().replace('_', '-')}:" not in line


def test_a_kubeconfig_list_with_missing_files_names_them(tmp_path: Path) -> None:
    gone, also_gone = tmp_path / "gone", tmp_path / "also-gone"
    result = run_recorder(["poll"], tmp_path, env={"KUBECONFIG": f"{gone}:{also_gone}"})
    assert one_error_line(result, "poll") == (
        f"recorder poll: error: KUBECONFIG names no kubeconfig that exists (not found: {gone}, "
        f"{also_gone}): fix the path(s) (several are separated by ':')"
    )
