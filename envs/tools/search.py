"""A `search` tool: BM25 retrieval over a local document collection.

Retrieval tasks (answer a question by finding the passage that holds the answer) need a
search engine the model can call. A web search would make episodes slow, flaky and
unreproducible, so the tool searches a small corpus held in memory instead: a bundled
one (`islands`, encyclopedia entries about a fictional archipelago, so that a model
cannot answer from memory) or any JSONL file of `{"id", "title", "text"}` records.

Ranking is BM25 through `bm25s`, which precomputes every score into a sparse matrix
(numpy/scipy only): the bundled corpus is indexed in a few milliseconds, a query costs
well under one, and there is no service to run. Words are lowercased and English
stopwords dropped; there is no stemmer, so "lantern" does not match "lanterns".
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import overload

import numpy as np

from envs.tasks import jsonl_lines
from envs.tools.tool import DEFAULT_MAX_OUTPUT_CHARS, Tool, ToolError

DOCUMENT_FIELDS = ("id", "title", "text")


@dataclass(frozen=True)
class Document:
    """One entry of a corpus."""

    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Corpus(Sequence[Document]):
    """An ordered collection of documents with unique ids."""

    name: str
    documents: tuple[Document, ...]

    def __post_init__(self) -> None:
        if not self.documents:
            raise ValueError(f"corpus {self.name!r} has no documents")
        seen: set[str] = set()
        for document in self.documents:
            if document.id in seen:
                raise ValueError(f"corpus {self.name!r}: duplicate document id {document.id!r}")
            seen.add(document.id)

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str | None = None) -> Corpus:
        """A corpus from a JSONL file of `{"id", "title", "text"}` objects (blank lines skipped).

        Raises ValueError naming the file and line for bad JSON, a missing or non-text
        field, a duplicate id, or a file with no documents.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"corpus file not found: {path}")
        documents: list[Document] = []
        first_line: dict[str, int] = {}
        for where, lineno, record in jsonl_lines(path):
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            for key in DOCUMENT_FIELDS:
                if key not in record:
                    raise ValueError(f"{where}: missing field {key!r} (a document needs id, title, text)")
                if not isinstance(record[key], str):
                    raise ValueError(f"{where}: field {key!r} must be a string")
            if not record["id"].strip():
                raise ValueError(f"{where}: field 'id' is empty")
            if not record["text"].strip():
                raise ValueError(f"{where}: field 'text' is empty")
            doc_id = record["id"]
            if doc_id in first_line:
                raise ValueError(
                    f"{where}: duplicate document id {doc_id!r} (first on line {first_line[doc_id]})"
                )
            first_line[doc_id] = lineno
            documents.append(Document(record["id"], record["title"], record["text"]))
        if not documents:
            raise ValueError(f"{path}: no documents in file")
        return cls(name or path.stem, tuple(documents))

    def __len__(self) -> int:
        return len(self.documents)

    @overload
    def __getitem__(self, index: int) -> Document: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Document]: ...
    def __getitem__(self, index: int | slice) -> Document | Sequence[Document]:
        return self.documents[index]

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, {len(self.documents)} documents)"

    def get(self, doc_id: str) -> Document:
        """The document with this id (KeyError if none)."""
        for document in self.documents:
            if document.id == doc_id:
                return document
        raise KeyError(f"no document {doc_id!r} in corpus {self.name!r}")


def _bundled_names() -> list[str]:
    folder = resources.files("envs") / "data" / "corpora"
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl"))


def bundled_corpus(name: str = "islands") -> Corpus:
    """A corpus shipped inside the package (`envs/data/corpora/<name>.jsonl`); read once, then shared."""
    return _bundled_corpus(name)


@cache
def _bundled_corpus(name: str) -> Corpus:
    data = resources.files("envs") / "data" / "corpora" / f"{name}.jsonl"
    if not data.is_file():
        raise ValueError(f"no bundled corpus {name!r}; available: {', '.join(_bundled_names()) or 'none'}")
    with resources.as_file(data) as path:
        return Corpus.load(path, name=name)


def resolve_corpus(corpus: Corpus | str | os.PathLike[str]) -> Corpus:
    """A Corpus as is; a path ending in `.jsonl` loaded; any other string a bundled corpus name."""
    if isinstance(corpus, Corpus):
        return corpus
    if isinstance(corpus, os.PathLike) or str(corpus).endswith(".jsonl"):
        return Corpus.load(corpus)
    if isinstance(corpus, str):
        return bundled_corpus(corpus)
    raise TypeError(f"corpus must be a Corpus, a bundled corpus name or a .jsonl path, got {corpus!r}")


class BM25Index:
    """A BM25 index over a corpus (title and text of each document), built once.

    `search` only reads the index and the tokenizer's vocabulary (queries never add
    words to it), so concurrent calls from several threads are safe.
    """

    def __init__(self, corpus: Corpus, *, k1: float = 1.5, b: float = 0.75) -> None:
        try:
            import bm25s  # imported here: `import envs.tools` should not pay for scipy
        except ImportError:
            raise ImportError(
                "the search tool needs bm25s: pip install 'rewardgym[tools]' (or bm25s)"
            ) from None
        self.corpus = corpus
        self._tokenizer = bm25s.tokenization.Tokenizer(lower=True, stopwords="english", stemmer=None)
        tokens = self._tokenizer.tokenize(
            [f"{d.title}\n{d.text}" for d in corpus],
            update_vocab=True,
            return_as="tuple",
            show_progress=False,
        )
        self._retriever = bm25s.BM25(k1=k1, b=b)
        self._retriever.index(tokens, show_progress=False)

    def search(self, query: str, k: int = 3) -> list[tuple[Document, float]]:
        """The top `k` documents for `query`, best first, with their scores; zero scores left out."""
        if k <= 0:
            return []
        # Words the corpus never uses and stopwords are dropped; "never" keeps the vocabulary read-only.
        query_ids = self._tokenizer.tokenize(
            [query], update_vocab="never", return_as="ids", show_progress=False, allow_empty=False
        )
        if not query_ids[0]:  # no word of the query is in any document
            return []
        results, scores = self._retriever.retrieve(
            query_ids, k=min(k, len(self.corpus)), show_progress=False, n_threads=0, backend_selection="numpy"
        )
        return [
            (self.corpus[int(i)], float(s))
            for i, s in zip(np.asarray(results[0]), np.asarray(scores[0]), strict=True)
            if s > 0
        ]


def format_hits(hits: Sequence[tuple[Document, float]], snippet_chars: int) -> str:
    """Hits as `[id] Title` blocks followed by the (cut) text, separated by blank lines."""
    if not hits:
        return "No results."
    blocks = []
    for document, _ in hits:
        text = document.text
        if len(text) > snippet_chars:  # cut at a word boundary where there is one
            cut = text[:snippet_chars]
            text = (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip() + " ..."
        blocks.append(f"[{document.id}] {document.title}\n{text}")
    return "\n\n".join(blocks)


def search_tool(
    corpus: Corpus | str | os.PathLike[str] = "islands",
    *,
    k: int = 3,
    snippet_chars: int = 600,
    timeout_s: float = 5.0,
    max_output_chars: int | None = None,
) -> Tool:
    """A `search` tool over `corpus` (a Corpus, a bundled corpus name, or a .jsonl path).

    The tool takes one argument, `query`, and answers with the top `k` hits, best first,
    as blocks separated by a blank line: `[doc-007] Title` on one line, then the text
    (cut to `snippet_chars` at a word boundary, ending " ..." when cut); "No results."
    when no document shares a word with the query. The index is built here, once; every
    call of the tool reuses it. `max_output_chars` (default: room for `k` full hits) cuts
    longer answers, keeping head and tail.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if snippet_chars < 1:
        raise ValueError(f"snippet_chars must be positive, got {snippet_chars}")
    index = BM25Index(resolve_corpus(corpus))

    def search(query: str) -> str:
        """Search the document collection and return the most relevant passages.

        Args:
            query: keywords or a question describing what to look for
        """
        if not query.strip():
            raise ToolError("the query is empty")
        return format_hits(index.search(query, k), snippet_chars)

    if max_output_chars is None:  # room for k full hits
        max_output_chars = max(DEFAULT_MAX_OUTPUT_CHARS, k * (snippet_chars + 200))
    return Tool(search, name="search", timeout_s=timeout_s, max_output_chars=max_output_chars)
