"""Repository promises: `.ci/run` runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command_exactly() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n([^\n]*python3 -m venv[^\n]*)\n```", readme)
    assert len(commands) == 2, "the README should show exactly two set-up commands"
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert ci_lines[-1] == test_command
