"""Languages the sandbox knows: where the source goes, how it is compiled and run.

Python runs in-process in the sandbox's (warm) interpreter; the rest are exec'd. A
language whose tools are missing on the host is reported clearly, not half-run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    name: str
    source_file: str
    compile_argv: tuple[str, ...] | None  # None: nothing to compile
    run_argv: tuple[str, ...] | None  # None: run the source in the sandbox's own Python
    tools: tuple[str, ...]  # programs that must exist on the host

    def missing_tools(self) -> list[str]:
        return [tool for tool in self.tools if shutil.which(tool) is None]


LANGUAGES: dict[str, Language] = {
    "python": Language("python", "main.py", None, None, ()),
    "bash": Language("bash", "main.sh", None, ("bash", "main.sh"), ("bash",)),
    "c": Language(
        "c", "main.c", ("gcc", "-O2", "-std=gnu11", "-o", "main", "main.c", "-lm"), ("./main",), ("gcc",)
    ),
    "cpp": Language(
        "cpp", "main.cpp", ("g++", "-O2", "-std=gnu++17", "-o", "main", "main.cpp"), ("./main",), ("g++",)
    ),
}
ALIASES = {"python3": "python", "py": "python", "sh": "bash", "c++": "cpp", "cxx": "cpp"}


def get_language(name: str) -> Language:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in LANGUAGES:
        raise ValueError(f"unknown language {name!r}; known: {', '.join(sorted(LANGUAGES))}")
    return LANGUAGES[key]
