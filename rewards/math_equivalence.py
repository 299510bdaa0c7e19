"""Math answer equivalence with math-verify, made safe to call from anywhere.

math-verify times out with `signal.alarm`, which only works on the main thread, and SymPy
can hang or eat memory on adversarial answers (`9^{9^{9^{9^{9}}}}` never returns). So the
check runs in worker processes with math-verify's own timeouts off, under a hard deadline
that kills a stuck worker (see `worker_pool`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from rewards.base import Reward
from rewards.extract import DEFAULT_FORMATS, AnswerFormat, check_formats, extract_answer
from rewards.types import Sample, Score
from rewards.worker_pool import WorkerPool

DEFAULT_TIMEOUT_S = 5.0
MAX_ANSWER_CHARS = 1000


def verify_answer(gold: str, answer: str) -> bool:
    """math-verify's verdict on `answer` against `gold` (runs inside a worker process)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notices
    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    if not gold_parsed:
        raise ValueError(f"math-verify could not parse the gold answer {gold!r}")
    answer_parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=None)
    if not answer_parsed:
        return False  # an unparseable answer is a wrong answer, not a verifier failure
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))  # gold first


class MathVerifier:
    """A pool of math-verify workers with a hard per-answer deadline."""

    _default: MathVerifier | None = None
    _default_lock = threading.Lock()

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_limit_mb: int | None = 2048,
    ) -> None:
        self.pool = WorkerPool(
            verify_answer,
            num_workers=num_workers,
            timeout_s=timeout_s,
            memory_limit_mb=memory_limit_mb,
            warmup_args=("1", "\\frac{2}{2}"),
            name="math-verify",
        )

    @classmethod
    def shared(cls) -> MathVerifier:
        """The process-wide verifier that math rewards use unless given their own.

        One pool per process, not one per environment: a GRPO group makes G environments,
        and G pools of workers would oversubscribe the machine.
        """
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    async def verify(self, gold: str, answer: str) -> bool:
        return await self.pool.run(gold, answer)

    def close(self) -> None:
        self.pool.close()


class MathEquivalence(Reward):
    """1.0 when the final answer is mathematically equivalent to the reference.

    The answer is extracted from the completion (`\\boxed{}` first, then an `Answer:` line,
    by default). No answer, or one longer than `max_answer_chars`, scores 0 (not an error);
    a verifier timeout or crash is an error on that item. Extraction runs here, in the
    caller's process, so it is linear in the reply (see `rewards.extract`).
    """

    name = "math"

    def __init__(
        self,
        formats: Sequence[AnswerFormat] = DEFAULT_FORMATS,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        timeout_s: float | None = None,
        verifier: MathVerifier | None = None,
        name: str = "math",
    ) -> None:
        if verifier is not None and timeout_s is not None:
            raise ValueError("give either a verifier or a timeout_s for a new one, not both")
        self.formats = check_formats(formats)
        if not self.formats:
            raise ValueError("math equivalence needs at least one answer format to extract the answer")
        self.max_answer_chars = max_answer_chars
        self._verifier = verifier or (MathVerifier(timeout_s=timeout_s) if timeout_s else None)
        self.name = name

    @property
    def verifier(self) -> MathVerifier:
        return self._verifier or MathVerifier.shared()

    async def compute(self, sample: Sample) -> Score:
        if sample.reference is None:
            raise ValueError("this sample has no reference answer")
        answer = extract_answer(sample.completion, self.formats)
        if answer is None:
            return Score(value=0.0, passed=False, info={"answer": None, "reason": "no answer found"})
        if len(answer) > self.max_answer_chars:
            reason = f"answer is {len(answer)} characters, over the {self.max_answer_chars} limit"
            return Score(value=0.0, passed=False, info={"answer": answer[:200], "reason": reason})
        correct = await self.verifier.verify(str(sample.reference), answer)
        return Score(value=float(correct), passed=correct, info={"answer": answer})
