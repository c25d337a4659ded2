"""The README's shell commands, as a reader would copy them: its code blocks, split into
commands (continuation lines joined, trailing comments dropped), and the quick start line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SHELLS = ("sh", "bash", "shell", "console")


@dataclass(frozen=True)
class Block:
    line: int
    """Line of the README where the block's first command is."""
    heading: str
    """The nearest heading above it."""
    text: str


def shell_blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    blocks = []
    heading = ""
    fence: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.startswith("```"):
                fence, body, start = line[3:].strip(), [], number + 1
        elif line.startswith("```"):
            if fence in SHELLS:
                blocks.append(Block(start, heading, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    return blocks


_COMMENT = re.compile(r"\s+#.*$")


def commands(block: Block) -> list[str]:
    """Each command of ``block``: continuation lines joined with one space, a trailing
    ``# comment`` dropped, blank lines skipped."""
    out: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = _COMMENT.sub("", pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def all_commands() -> list[tuple[Block, str]]:
    return [(block, command) for block in shell_blocks() for command in commands(block)]


def quick_start_line() -> str:
    """The one command of the Quick start section that installs and runs the demo."""
    (block,) = [b for b in shell_blocks() if b.heading == "Quick start" and "demo" in b.text]
    (line,) = commands(block)
    return line
