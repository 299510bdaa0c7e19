"""Training metrics: one JSON line per step, plus the same scalars in TensorBoard.

The JSONL file is the record of truth: every line is flushed as it is written, so a killed
run keeps everything it logged, and a resumed run cuts the file back to its checkpoint's
step so no step appears twice. TensorBoard is a convenience on top and may be absent.

Metric names are slash-separated groups (`reward/mean`, `clip_frac/low`, `time/rollout`);
`trainer.plot` draws one panel per group.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_RESERVED = ("step", "time")

Metrics = Mapping[str, float | int | None]


def _scalar(key: str, value: object) -> float | int | None:
    """A JSON-ready number: NaN and ±inf become None so every line stays valid JSON."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral):  # also bool and numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # also numpy floats
        number = float(value)
        return number if math.isfinite(number) else None
    raise TypeError(
        f"metric {key!r} must be a number or None, got {type(value).__name__} (call .item() on tensors)"
    )


def _parse(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, row) pairs; a torn last line (a run killed mid-write) is dropped, corruption
    anywhere else is an error rather than silently lost data."""
    lines = text.splitlines()
    rows: list[tuple[str, dict[str, Any]]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                logger.warning("%s: dropping a torn last line (%d chars)", path, len(line))
                break
            raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{number}: expected an object with an integer 'step'")
        rows.append((line, row))
    return rows


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every logged row of a metrics.jsonl, oldest first (a torn last line skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path} (a training run writes {METRICS_FILE})")
    return [row for _, row in _parse(path.read_text(encoding="utf-8"), path)]


class MetricsLogger:
    """Appends one row per step to `run_dir/metrics.jsonl` and, optionally, TensorBoard.

    `resume_step`: the step of the checkpoint a run resumes from; rows after it (logged by
    the run that died) are dropped from both the JSONL file and TensorBoard's view.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if resume_step is not None:
            self._rewrite(max_step=resume_step)
        elif self._has_torn_tail():  # appending after a torn line would corrupt the next row
            self._rewrite(max_step=None)
        self._file = self.path.open("a", encoding="utf-8")
        purge_step = None if resume_step is None else resume_step + 1
        self._writer = self._open_tensorboard(purge_step) if tensorboard else None

    def _open_tensorboard(self, purge_step: int | None) -> Any:
        """A SummaryWriter, or None (with one warning) when tensorboard is not installed."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            logger.warning(
                "TensorBoard logging is off (%s); install it with `pip install tensorboard`. "
                "Metrics still go to %s.",
                exc,
                self.path,
            )
            return None
        return SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=purge_step)

    def log(self, step: int, metrics: Metrics) -> None:
        """Write one row now: a crash right after this call loses nothing."""
        row: dict[str, Any] = {"step": int(step), "time": time.time()}
        for key, value in metrics.items():
            if key in _RESERVED:
                raise ValueError(f"metric name {key!r} is reserved")
            row[key] = _scalar(key, value)
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in row.items():
                if key not in _RESERVED and value is not None:
                    self._writer.add_scalar(key, value, global_step=row["step"], walltime=row["time"])
            self._writer.flush()

    def truncate_after(self, step: int) -> None:
        """Keep only rows with step <= `step` (the JSONL file; TensorBoard purges through
        `resume_step` at construction)."""
        if self._file.closed:
            raise ValueError(f"the metrics logger for {self.run_dir} is closed")
        self._file.close()
        self._rewrite(max_step=step)
        self._file = self.path.open("a", encoding="utf-8")

    def _has_torn_tail(self) -> bool:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"

    def _rewrite(self, max_step: int | None) -> None:
        """Atomically replace the file with its valid rows up to `max_step` (None: all)."""
        if not self.path.is_file():
            return
        rows = _parse(self.path.read_text(encoding="utf-8"), self.path)
        kept = [line for line, row in rows if max_step is None or row["step"] <= max_step]
        if len(kept) < len(rows):
            logger.info("%s: dropped %d rows after step %s", self.path, len(rows) - len(kept), max_step)
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=f".{METRICS_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """Flush and close the file and the TensorBoard writer (safe to call twice)."""
        self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
