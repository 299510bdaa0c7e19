"""An on-disk cache of judge replies, so re-running an experiment does not re-ask the judge.

Judging is the slow, paid part of RLAIF: the same (model, prompt, sampling) asked twice
should cost one request. Entries live in one SQLite file (safe for several processes);
the key is a hash of everything that determines the reply. Only deterministic requests
are cached (temperature 0, or a fixed seed): caching a sampled reply would freeze a
random draw and make re-asking pointless.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def cache_key(model: str, prompt: Any, params: dict[str, Any]) -> str:
    """A stable hash of the model name, the prompt (text or messages) and sampling parameters."""
    blob = json.dumps({"model": model, "prompt": prompt, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class JudgeCache:
    """`get`/`put` of JSON replies by key, in `directory/judge_cache.sqlite`."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "judge_cache.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise OSError(f"cannot open the judge cache at {self.path}: {exc}") from exc
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, reply: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, json.dumps(reply)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
