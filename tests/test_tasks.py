"""Task sources: files, HF datasets, generators; splits and shuffles; malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs import (
    GeneratedTasks,
    ReasoningGymTasks,
    Task,
    TaskFileError,
    TaskList,
    bundled_tasks,
    load_hf_dataset,
    load_jsonl,
    resolve_tasks,
)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_tasks_keep_extra_fields_and_default_ids(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"id": "a", "prompt": "1+1?", "answer": "2", "level": 1},
            "",
            {
                "prompt": [{"role": "system", "content": "terse"}, {"role": "user", "content": "2+2?"}],
                "answer": 4,
            },
        ],
    )
    tasks = load_jsonl(path)
    assert len(tasks) == 2 and tasks.name == "qa"
    assert tasks[0] == Task(id="a", prompt="1+1?", answer="2", info={"level": 1})
    assert tasks[1].id == "qa-3"  # file stem and line number
    assert tasks[1].messages() == [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": "2+2?"},
    ]
    assert tasks.find("a").answer == "2"


def test_custom_field_names(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"uid": 7, "question": "hi?", "gold": "yo"}])
    task = load_jsonl(path, prompt_field="question", answer_field="gold", id_field="uid")[0]
    assert (task.id, task.prompt, task.answer, dict(task.info)) == ("7", "hi?", "yo", {})


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (['{"prompt": "a", "answer": 1}', "{not json"], r"q\.jsonl:2: invalid JSON"),
        (
            [{"question": "a"}],
            r"q\.jsonl:1: no 'prompt' field \(fields present: question\); set prompt_field",
        ),
        ([{"prompt": ""}], r"q\.jsonl:1: 'prompt' must be non-empty text"),
        ([{"prompt": [{"role": "user"}]}], r"q\.jsonl:1: 'prompt' is a list but not a list of chat messages"),
        (["[1, 2]"], r"q\.jsonl:1: expected a JSON object, got list"),
        ([{"id": "x", "prompt": "a"}, {"id": "x", "prompt": "b"}], r"duplicate task id 'x'"),
        ([""], r"no tasks in file"),
    ],
)
def test_malformed_task_files_name_file_line_and_problem(
    tmp_path: Path, rows: list[object], message: str
) -> None:
    with pytest.raises(TaskFileError, match=message):
        load_jsonl(write_jsonl(tmp_path / "q.jsonl", rows))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="task file not found"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_bundled_math_set() -> None:
    tasks = bundled_tasks("math_basic")
    assert len(tasks) == 200
    assert {t.info["level"] for t in tasks} == {1, 2, 3, 4}
    assert all(isinstance(t.answer, str) and t.answer for t in tasks)
    with pytest.raises(TaskFileError, match=r"no bundled task set 'nope'; available: .*math_basic"):
        bundled_tasks("nope")


def test_local_hf_datasets(tmp_path: Path) -> None:
    import datasets

    rows = {"prompt": ["a?", "b?", "c?"], "answer": ["1", "2", "3"], "topic": ["x", "y", "z"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "flat"))
    tasks = load_hf_dataset(tmp_path / "flat")
    assert [t.answer for t in tasks] == ["1", "2", "3"] and tasks[0].info == {"topic": "x"}
    assert tasks[2].id == "flat-2"

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "test": datasets.Dataset.from_dict({"prompt": ["q"], "answer": ["a"]}),
        }
    ).save_to_disk(str(tmp_path / "dict"))
    assert load_hf_dataset(tmp_path / "dict", split="test")[0].prompt == "q"
    with pytest.raises(TaskFileError, match=r"holds splits \['train', 'test'\]; choose one with split="):
        load_hf_dataset(tmp_path / "dict")
    with pytest.raises(TaskFileError, match="has no split 'dev'"):
        load_hf_dataset(tmp_path / "dict", split="dev")

    (tmp_path / "files").mkdir()
    write_jsonl(tmp_path / "files" / "train.jsonl", [{"prompt": "p", "answer": "a"}])
    assert load_hf_dataset(tmp_path / "files", split="train")[0].answer == "a"  # load_dataset on local files
    with pytest.raises(TaskFileError, match="reads datasets from local disk"):
        load_hf_dataset(tmp_path / "missing")


def test_reasoning_gym_tasks_are_deterministic_and_named_by_index() -> None:
    a = ReasoningGymTasks("basic_arithmetic", size=20, seed=3)
    b = ReasoningGymTasks("basic_arithmetic", size=20, seed=3)
    assert [t.prompt for t in a] == [t.prompt for t in b]
    assert a.task_id(5) == a[5].id == "reasoning_gym/basic_arithmetic/3/5"
    assert a[5].answer == a[5].info["entry"]["answer"]
    assert [t.prompt for t in ReasoningGymTasks("basic_arithmetic", size=20, seed=4)] != [t.prompt for t in a]
    with pytest.raises(ValueError, match="Did you mean basic_arithmetic"):
        ReasoningGymTasks("basic_arithmetc")


def test_generated_tasks() -> None:
    tasks = GeneratedTasks(lambda i: Task(id=f"g{i}", prompt=f"{i}+{i}?", answer=str(2 * i)), size=10)
    assert len(tasks) == 10 and tasks[3].answer == "6" and tasks[-1].id == "g9"
    with pytest.raises(IndexError, match="out of range"):
        tasks[10]


def test_splits_are_disjoint_complete_and_stable_when_tasks_are_added() -> None:
    small = TaskList([Task(id=f"t{i}", prompt="p") for i in range(200)])
    train, evals = small.split("train"), small.split("eval")
    train_ids, eval_ids = {t.id for t in train}, {t.id for t in evals}
    assert not train_ids & eval_ids and len(train_ids | eval_ids) == 200
    assert 5 <= len(eval_ids) <= 40  # about 10 %
    bigger = TaskList([Task(id=f"t{i}", prompt="p") for i in range(400)])
    assert eval_ids <= {t.id for t in bigger.split("eval")}  # old tasks never change sides
    assert {t.id for t in small.split("eval", seed=1)} != eval_ids
    assert small.split("all") is small
    with pytest.raises(ValueError, match="split must be"):
        small.split("test")  # type: ignore[arg-type]


def test_shuffle_is_seeded_and_take_truncates() -> None:
    tasks = TaskList([Task(id=f"t{i}", prompt="p") for i in range(50)])
    once, again = tasks.shuffled(5), tasks.shuffled(5)
    assert [t.id for t in once] == [t.id for t in again]
    assert [t.id for t in once] != [t.id for t in tasks]
    assert sorted(t.id for t in once) == sorted(t.id for t in tasks)
    assert [t.id for t in once.take(3)] == [t.id for t in once][:3]
    assert len(tasks.take(500)) == 50


def test_resolve_task_specs(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "p", "answer": "a"}])
    assert len(resolve_tasks(str(path))) == 1
    assert len(resolve_tasks(f"jsonl:{path}")) == 1
    assert len(resolve_tasks("bundled:math_basic")) == 200
    easy = resolve_tasks("reasoning_gym:basic_arithmetic?max_digits=1&max_terms=2&size=30&seed=2")
    assert len(easy) == 30 and easy[0].id.startswith("reasoning_gym/basic_arithmetic/2/")
    metadata = [t.info["entry"]["metadata"] for t in easy]
    assert {(m["num_terms"], m["num_digits"]) for m in metadata} == {
        (2, 1)
    }  # the config reached the generator
    with pytest.raises(ValueError, match="cannot tell where to load tasks"):
        resolve_tasks("mystery")
    with pytest.raises(ValueError, match="unknown task source kind 'ftp'"):
        resolve_tasks("ftp:x")
