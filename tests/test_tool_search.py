"""The BM25 search tool over a real bm25s index: the bundled corpus and its QA set, retrieval
quality, the tool's schema and calls, user corpora and malformed corpus files."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from envs.tasks import bundled_tasks
from envs.tools.search import BM25Index, Corpus, Document, bundled_corpus, resolve_corpus, search_tool
from envs.tools.tool import ToolResult


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def aliases(answer: str | list[str]) -> list[str]:
    return [answer] if isinstance(answer, str) else list(answer)


def call(tool, arguments: dict) -> ToolResult:  # type: ignore[no-untyped-def]
    return asyncio.run(tool(arguments))


ANIMALS = [
    {"id": "a1", "title": "Otters", "text": "Otters eat fish and crabs in rivers and along coasts."},
    {"id": "a2", "title": "Owls", "text": "Owls hunt mice at night and swallow their prey whole."},
    {"id": "a3", "title": "Oaks", "text": "Oak trees drop acorns that feed squirrels and jays."},
]


def test_bundled_corpus_loads_with_unique_ids() -> None:
    corpus = bundled_corpus("islands")
    assert 55 <= len(corpus) <= 70
    ids = [d.id for d in corpus]
    assert len(set(ids)) == len(ids)
    assert all(d.title and 80 <= len(d.text.split()) <= 160 for d in corpus)
    assert bundled_corpus() is corpus  # read once, then shared
    assert corpus.get("doc-001").title == "The Halvessa Archipelago"


def test_every_question_points_at_a_document_holding_its_answer() -> None:
    corpus = bundled_corpus("islands")
    tasks = bundled_tasks("retrieval_qa")
    assert 100 <= len(tasks) <= 140
    for task in tasks:
        document = corpus.get(task.info["doc_id"])
        text = f"{document.title}\n{document.text}".lower()
        assert any(a.lower() in text for a in aliases(task.answer)), (task.id, task.answer, document.id)


def test_gold_document_is_in_the_top_three_for_most_questions() -> None:
    index = BM25Index(bundled_corpus("islands"))
    tasks = bundled_tasks("retrieval_qa")
    found = sum(
        task.info["doc_id"] in [d.id for d, _ in index.search(str(task.prompt), k=3)] for task in tasks
    )
    recall = found / len(tasks)
    print(f"top-3 recall on retrieval_qa: {recall:.3f} ({found}/{len(tasks)})")
    assert recall >= 0.85


def test_index_ranks_and_leaves_out_documents_that_do_not_match() -> None:
    index = BM25Index(resolve_corpus(Corpus("animals", tuple(Document(**r) for r in ANIMALS))))
    hits = index.search("what do otters eat", k=3)
    assert [d.id for d, _ in hits] == ["a1"]  # the others share no word with the query
    assert hits[0][1] > 0
    assert index.search("the and of", k=3) == []  # stopwords only
    assert index.search("zebra", k=3) == []  # no word the corpus knows
    assert len(index.search("otters owls oaks", k=10)) == 3  # k above the corpus size


def test_concurrent_searches_agree_with_sequential_ones() -> None:
    index = BM25Index(bundled_corpus("islands"))
    queries = [str(t.prompt) for t in bundled_tasks("retrieval_qa")]
    expected = [[d.id for d, _ in index.search(q, k=3)] for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda q: [d.id for d, _ in index.search(q, k=3)], queries * 4))
    assert got == expected * 4


def test_tool_schema() -> None:
    tool = search_tool()
    assert tool.name == "search"
    assert tool.required == ["query"]
    function = tool.schema["function"]
    assert function["name"] == "search"
    assert function["description"].startswith("Search the document collection")
    assert function["parameters"]["properties"]["query"]["type"] == "string"
    assert function["parameters"]["properties"]["query"]["description"]


def test_tool_returns_the_gold_document() -> None:
    tool = search_tool("islands", k=3)
    task = bundled_tasks("retrieval_qa")[0]
    result = call(tool, {"query": task.prompt})
    assert result.error is None and not result.truncated
    assert f"[{task.info['doc_id']}] " in result.content
    blocks = result.content.split("\n\n")
    assert len(blocks) == 3
    assert all(b.startswith("[doc-") and "\n" in b for b in blocks)


def test_tool_cuts_snippets_and_reports_no_results() -> None:
    tool = search_tool(k=1, snippet_chars=50)
    result = call(tool, {"query": "Greymantle Light lighthouse"})
    header, text = result.content.split("\n", 1)
    assert header == "[doc-060] Greymantle Light"
    assert text.endswith(" ...") and len(text) <= 54
    assert call(tool, {"query": "xylophone quasar"}).content == "No results."


@pytest.mark.parametrize("query", ["", "   \n"])
def test_empty_query_is_a_tool_error(query: str) -> None:
    result = call(search_tool(), {"query": query})
    assert result.error == "raised"
    assert result.content == "Error: the query is empty"


def test_missing_query_is_bad_arguments() -> None:
    assert call(search_tool(), {}).error == "bad_arguments"


def test_user_corpus_from_a_jsonl_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "animals.jsonl", [ANIMALS[0], "", *ANIMALS[1:]])
    corpus = Corpus.load(path)
    assert corpus.name == "animals" and [d.id for d in corpus] == ["a1", "a2", "a3"]
    for source in (str(path), path, corpus):
        result = call(search_tool(source, k=2), {"query": "owls at night"})
        assert result.content.startswith("[a2] Owls\nOwls hunt mice")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([ANIMALS[0], "{not json"], r"animals\.jsonl:2: invalid JSON"),
        ([ANIMALS[0], "[1, 2]"], r"animals\.jsonl:2: expected a JSON object"),
        ([{"id": "x", "title": "X"}], r"animals\.jsonl:1: missing field 'text'"),
        ([{"id": 7, "title": "X", "text": "y"}], r"animals\.jsonl:1: field 'id' must be a string"),
        ([{"id": "x", "title": "X", "text": "  "}], r"animals\.jsonl:1: field 'text' is empty"),
        (
            [ANIMALS[0], ANIMALS[1], ANIMALS[0]],
            r"animals\.jsonl:3: duplicate document id 'a1' \(first on line 1\)",
        ),
        (["", "  "], r"animals\.jsonl: no documents in file"),
    ],
)
def test_malformed_corpus_files_are_named_with_their_line(
    tmp_path: Path, rows: list[object], message: str
) -> None:
    path = write_jsonl(tmp_path / "animals.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        Corpus.load(path)
    with pytest.raises(ValueError, match=message):
        search_tool(str(path))


def test_missing_file_and_unknown_bundled_corpus(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="corpus file not found"):
        Corpus.load(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"no bundled corpus 'atlantis'; available: islands"):
        search_tool("atlantis")
    with pytest.raises(ValueError, match="k must be at least 1"):
        search_tool(k=0)
