"""Tasks and where they come from: bundled files, JSONL, local HF datasets, generators.

A `TaskSource` is a finite, indexable, deterministic sequence of tasks: the same index
always gives the same task. Views on top of it give train/eval splits (stable: decided by
a hash of each task id, so adding tasks never moves old ones across the split) and
seeded shuffles.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import parse_qsl

import numpy as np

from envs.spaces import is_message
from rewards.types import Message

Split = Literal["train", "eval", "all"]


@dataclass(frozen=True)
class Task:
    """One problem: what to ask, what counts as right, and anything else the env needs."""

    id: str
    prompt: str | tuple[Message, ...]  # user text, or ready-made messages
    answer: Any = None
    info: Mapping[str, Any] = field(default_factory=dict)

    def messages(self, system_prompt: str | None = None) -> list[Message]:
        """The opening conversation for this task (fresh dicts every call)."""
        if isinstance(self.prompt, str):
            opening: list[Message] = [{"role": "user", "content": self.prompt}]
        else:
            opening = [dict(m) for m in self.prompt]  # type: ignore[misc]
        if system_prompt and not (opening and opening[0]["role"] == "system"):
            opening.insert(0, {"role": "system", "content": system_prompt})
        return opening


class TaskFileError(ValueError):
    """A task file or dataset row is malformed; the message names the file, line and field."""


class TaskSource(Sequence[Task]):
    """A finite, deterministic, indexable collection of tasks."""

    name: str = "tasks"

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def get(self, index: int) -> Task:
        """The task at `index` (0 <= index < len)."""

    @overload
    def __getitem__(self, index: int) -> Task: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Task]: ...
    def __getitem__(self, index: int | slice) -> Task | Sequence[Task]:
        if isinstance(index, slice):
            return [self.get(i) for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"task index {index} out of range for {len(self)} tasks in {self.name}")
        return self.get(index % len(self))

    def __iter__(self) -> Iterator[Task]:
        for i in range(len(self)):
            yield self.get(i)

    def task_id(self, index: int) -> str:
        """The id of task `index`; sources that can name a task without building it override this."""
        return self.get(index).id

    def find(self, task_id: str) -> Task:
        """The task with this id."""
        index = self._index_by_id().get(task_id)
        if index is None:
            raise KeyError(f"no task with id {task_id!r} in {self.name}")
        return self.get(index)

    def _index_by_id(self) -> dict[str, int]:
        cached = self.__dict__.get("_id_index")
        if cached is None:
            cached = {self.task_id(i): i for i in range(len(self))}
            self.__dict__["_id_index"] = cached
        return cached

    def split(self, which: Split, eval_fraction: float = 0.1, seed: int = 0) -> TaskSource:
        """The train or eval part, decided per task by a seeded hash of its id."""
        if which == "all":
            return self
        if which not in ("train", "eval"):
            raise ValueError(f"split must be 'train', 'eval' or 'all', got {which!r}")
        if not 0.0 < eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        want_eval = which == "eval"
        indices = [
            i for i in range(len(self)) if (_unit_hash(self.task_id(i), seed) < eval_fraction) == want_eval
        ]
        return IndexedView(self, indices, name=f"{self.name}[{which}]")

    def shuffled(self, seed: int) -> TaskSource:
        """A seeded permutation of this source."""
        order = np.random.default_rng(seed).permutation(len(self)).tolist()
        return IndexedView(self, order, name=f"{self.name}[shuffled:{seed}]")

    def take(self, n: int) -> TaskSource:
        return IndexedView(self, list(range(min(n, len(self)))), name=f"{self.name}[:{n}]")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} tasks)"


def _unit_hash(task_id: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class IndexedView(TaskSource):
    """A subset or reordering of another source."""

    def __init__(self, base: TaskSource, indices: Sequence[int], name: str) -> None:
        self.base = base
        self.indices = list(indices)
        self.name = name

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, index: int) -> Task:
        return self.base.get(self.indices[index])

    def task_id(self, index: int) -> str:
        return self.base.task_id(self.indices[index])


class TaskList(TaskSource):
    """Tasks held in memory."""

    def __init__(self, tasks: Sequence[Task], name: str = "tasks") -> None:
        seen: set[str] = set()
        for task in tasks:
            if task.id in seen:
                raise TaskFileError(f"{name}: duplicate task id {task.id!r}")
            seen.add(task.id)
        self.tasks = list(tasks)
        self.name = name

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, index: int) -> Task:
        return self.tasks[index]


def task_from_record(
    record: Mapping[str, Any],
    *,
    where: str,
    default_id: str,
    prompt_field: str = "prompt",
    answer_field: str | None = "answer",
    id_field: str | None = "id",
) -> Task:
    """Build a Task from one row (JSONL line, dataset row); errors say where and what."""
    if not isinstance(record, Mapping):
        raise TaskFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if prompt_field not in record:
        present = ", ".join(sorted(map(str, record))) or "none"
        raise TaskFileError(
            f"{where}: no {prompt_field!r} field (fields present: {present}); "
            "set prompt_field to the field that holds the question"
        )
    prompt = record[prompt_field]
    if isinstance(prompt, list):
        if not prompt or not all(is_message(m) for m in prompt):
            raise TaskFileError(
                f"{where}: {prompt_field!r} is a list but not a list of chat messages "
                '({"role": ..., "content": ...})'
            )
        prompt = tuple(prompt)
    elif not isinstance(prompt, str) or not prompt.strip():
        raise TaskFileError(f"{where}: {prompt_field!r} must be non-empty text or a list of messages")
    task_id = default_id
    if id_field and record.get(id_field) is not None:
        task_id = str(record[id_field])
    answer = record.get(answer_field) if answer_field else None
    used = {prompt_field, answer_field, id_field}
    info = {k: v for k, v in record.items() if k not in used}
    return Task(id=task_id, prompt=prompt, answer=answer, info=info)


def jsonl_lines(path: Path, error: type[ValueError] = ValueError) -> Iterator[tuple[str, int, Any]]:
    """Each non-blank line of a JSONL file, parsed, with `file:line` and the line number for
    messages; a line that is not JSON raises `error` saying where."""
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def load_jsonl(
    path: str | os.PathLike[str],
    *,
    prompt_field: str = "prompt",
    answer_field: str | None = "answer",
    id_field: str | None = "id",
    name: str | None = None,
) -> TaskList:
    """Tasks from a JSONL file, one JSON object per line (blank lines are skipped).

    Rows without an id get `<file stem>-<line number>`. A malformed line raises
    `TaskFileError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file not found: {path}")
    tasks = [
        task_from_record(
            record,
            where=where,
            default_id=f"{path.stem}-{lineno}",
            prompt_field=prompt_field,
            answer_field=answer_field,
            id_field=id_field,
        )
        for where, lineno, record in jsonl_lines(path, TaskFileError)
    ]
    if not tasks:
        raise TaskFileError(f"{path}: no tasks in file")
    return TaskList(tasks, name=name or path.stem)


@cache
def bundled_tasks(name: str) -> TaskList:
    """A task set shipped inside the package (`envs/data/<name>.jsonl`); read once, then shared."""
    data = resources.files("envs") / "data" / f"{name}.jsonl"
    if not data.is_file():
        available = sorted(
            p.name.removesuffix(".jsonl")
            for p in (resources.files("envs") / "data").iterdir()
            if p.name.endswith(".jsonl")
        )
        raise TaskFileError(f"no bundled task set {name!r}; available: {', '.join(available)}")
    with resources.as_file(data) as path:
        return load_jsonl(path, name=name)


def load_hf_dataset(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    prompt_field: str = "prompt",
    answer_field: str | None = "answer",
    id_field: str | None = "id",
    name: str | None = None,
) -> TaskList:
    """Tasks from a HuggingFace `datasets` dataset on local disk.

    Accepts a directory written by `Dataset.save_to_disk` (or a `DatasetDict`, with
    `split`), or anything `datasets.load_dataset` reads locally (a data directory, CSV,
    JSON or Parquet files).
    """
    try:
        import datasets
    except ImportError:
        raise ImportError("loading HF datasets needs `pip install rewardgym[tasks]`") from None
    location = Path(path)
    if not location.exists():
        raise TaskFileError(
            f"no dataset at {location}: rewardgym reads datasets from local disk "
            "(save one with Dataset.save_to_disk, or point at its data files)"
        )
    if (location / "dataset_info.json").exists() or (location / "dataset_dict.json").exists():
        loaded = datasets.load_from_disk(str(location))
    else:
        loaded = datasets.load_dataset(str(location), split=split)
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            raise TaskFileError(f"{location} holds splits {list(loaded)}; choose one with split=")
        if split not in loaded:
            raise TaskFileError(f"{location} has no split {split!r}; it has {list(loaded)}")
        loaded = loaded[split]
    label = name or location.name
    tasks = [
        task_from_record(
            row,
            where=f"{location} row {i}",
            default_id=f"{label}-{i}",
            prompt_field=prompt_field,
            answer_field=answer_field,
            id_field=id_field,
        )
        for i, row in enumerate(loaded)
    ]
    return TaskList(tasks, name=label)


class GeneratedTasks(TaskSource):
    """`size` tasks made on demand by `generate(index)`, which must be deterministic."""

    def __init__(self, generate: Callable[[int], Task], size: int, name: str = "generated") -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.generate = lru_cache(maxsize=4096)(generate)
        self.size = size
        self.name = name

    def __len__(self) -> int:
        return self.size

    def get(self, index: int) -> Task:
        return self.generate(index)


class ReasoningGymTasks(TaskSource):
    """Procedural tasks from a `reasoning-gym` generator (arithmetic, algebra, puzzles...).

    The answer is the generator's gold string; the whole generated entry is kept in
    `info["entry"]` for rewards that use reasoning-gym's own scorer.
    """

    def __init__(
        self,
        dataset: str,
        size: int = 1000,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import reasoning_gym
        except ImportError:
            raise ImportError("reasoning-gym tasks need `pip install rewardgym[tasks]`") from None
        from reasoning_gym.factory import DATASETS

        if dataset not in DATASETS:
            import difflib

            close = difflib.get_close_matches(dataset, DATASETS, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown reasoning-gym dataset {dataset!r}.{hint}")
        self.dataset_name = dataset
        self.seed = seed
        self.size = size
        self.name = f"reasoning_gym/{dataset}"
        self.dataset = reasoning_gym.create_dataset(dataset, size=size, seed=seed, **dict(config or {}))

    def __len__(self) -> int:
        return self.size

    def task_id(self, index: int) -> str:
        return f"{self.name}/{self.seed}/{index}"

    def get(self, index: int) -> Task:
        entry = self.dataset[index]
        return Task(
            id=self.task_id(index),
            prompt=entry["question"],
            answer=entry["answer"],
            info={"source": self.name, "entry": entry},
        )


def _parse_value(text: str) -> Any:
    """A number, bool, list or null if the text is JSON for one, else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resolve_tasks(spec: str | TaskSource) -> TaskSource:
    """A task source from a short spec, as used in configs and on the command line.

    `bundled:NAME` (a set shipped in the package), `reasoning_gym:NAME` (1000 tasks from
    that generator, seed 0; generator settings go in a query string, e.g.
    `reasoning_gym:basic_arithmetic?max_digits=2&size=500&seed=1`), `jsonl:PATH` or a path
    ending in `.jsonl`, `hf:PATH` (a local HF dataset; `hf:PATH@SPLIT` picks a split).
    A TaskSource passes through.
    """
    if isinstance(spec, TaskSource):
        return spec
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"tasks must be a TaskSource or a spec string, got {spec!r}")
    kind, sep, rest = spec.partition(":")
    if not sep:
        if spec.endswith(".jsonl"):
            return load_jsonl(spec)
        raise ValueError(
            f"cannot tell where to load tasks {spec!r} from; use bundled:NAME, "
            "reasoning_gym:NAME, jsonl:PATH or hf:PATH"
        )
    if kind == "bundled":
        return bundled_tasks(rest)
    if kind == "reasoning_gym":
        dataset, _, query = rest.partition("?")
        config: dict[str, Any] = {key: _parse_value(value) for key, value in parse_qsl(query)}
        size, seed = int(config.pop("size", 1000)), int(config.pop("seed", 0))
        return ReasoningGymTasks(dataset, size=size, seed=seed, config=config)
    if kind == "jsonl":
        return load_jsonl(rest)
    if kind == "hf":
        path, at, split = rest.partition("@")
        return load_hf_dataset(path, split=split if at else None)
    raise ValueError(
        f"unknown task source kind {kind!r} in {spec!r}; use bundled, reasoning_gym, jsonl or hf"
    )
