"""The hard-timeout process pool, with real processes, real hangs and real crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewards import WorkerCrashed, WorkerError, WorkerPool, WorkerTimeout

import pool_targets


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"


def wait_dead(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(pool_targets.add, num_workers=1, timeout_s=2.0) as p:
        yield p


def test_results_come_back_from_a_separate_process(pool: WorkerPool) -> None:
    assert pool.submit(2, 3).result(timeout=30) == 5
    with WorkerPool(pool_targets.pid, num_workers=2) as pids:
        worker_pids = {pids.submit().result(timeout=30) for _ in range(10)}
        assert os.getpid() not in worker_pids
        assert worker_pids <= set(pids.worker_pids())


def test_an_exception_in_the_function_is_an_answer_and_the_worker_survives() -> None:
    with WorkerPool(pool_targets.fail, num_workers=1) as p:
        with pytest.raises(WorkerError, match="ValueError: bad input"):
            p.submit("bad input").result(timeout=30)
        (first,) = p.worker_pids()
        with pytest.raises(WorkerError):
            p.submit("again").result(timeout=30)
        assert p.worker_pids() == [first]
        assert p.restarts == 0


def test_a_hung_call_is_killed_at_the_deadline_and_the_worker_replaced() -> None:
    with WorkerPool(pool_targets.sleep_then_pid, num_workers=1, timeout_s=1.0) as p:
        healthy_pid = p.submit(0).result(timeout=30)
        start = time.monotonic()
        with pytest.raises(WorkerTimeout, match="no answer within 1 s"):
            p.submit(60).result(timeout=30)
        assert time.monotonic() - start < 5
        assert wait_dead(healthy_pid)
        assert p.restarts == 1
        replacement_pid = p.submit(0).result(timeout=30)
        assert replacement_pid != healthy_pid


def test_a_busy_loop_is_killed_too() -> None:
    with WorkerPool(pool_targets.spin, num_workers=1, timeout_s=0.5) as p, pytest.raises(WorkerTimeout):
        p.submit().result(timeout=30)


def test_a_crashing_worker_fails_only_its_call_and_is_replaced() -> None:
    with WorkerPool(pool_targets.segfault, num_workers=1) as p:
        for expected_restarts in (1, 2):  # each call gets a fresh worker; the pool never breaks
            with pytest.raises(WorkerCrashed, match=f"exit code {-signal.SIGSEGV}"):
                p.submit().result(timeout=30)
            assert p.restarts == expected_restarts


def test_memory_is_capped_per_worker() -> None:
    with WorkerPool(pool_targets.allocate, num_workers=1, memory_limit_mb=512) as p:
        assert p.submit(16).result(timeout=30) == 16 * 1024 * 1024
        with pytest.raises((WorkerError, WorkerCrashed), match=r"MemoryError|exit code"):
            p.submit(2048).result(timeout=30)
        assert p.submit(16).result(timeout=30) == 16 * 1024 * 1024  # still serving


def test_unpicklable_arguments_and_unimportable_functions_are_refused(pool: WorkerPool) -> None:
    with pytest.raises(TypeError, match="cannot be sent to a worker"):
        pool.submit(threading.Lock(), 1).result(timeout=30)
    with pytest.raises(ValueError, match="module-level function"):
        WorkerPool(lambda x: x)
    assert pool.submit(1, 1).result(timeout=30) == 2


def test_concurrent_calls_from_two_event_loops_in_two_threads() -> None:
    with WorkerPool(pool_targets.add, num_workers=2) as p:
        results: dict[int, list[int]] = {}

        def loop_thread(offset: int) -> None:
            async def main() -> list[int]:
                return list(await asyncio.gather(*(p.run(offset, i) for i in range(50))))

            results[offset] = asyncio.run(main())

        threads = [threading.Thread(target=loop_thread, args=(k * 1000,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {0: list(range(50)), 1000: [1000 + i for i in range(50)]}


def test_close_kills_the_workers_and_refuses_new_calls() -> None:
    p = WorkerPool(pool_targets.add, num_workers=2)
    p.submit(1, 2).result(timeout=30)
    pids = p.worker_pids()
    p.close()
    assert all(wait_dead(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="is closed"):
        p.submit(1, 2)
    p.close()  # idempotent


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """A SIGKILLed run must not leave a worker spinning on an adversarial answer."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {str(Path(pool_targets.__file__).parent)!r})
            import pool_targets
            from rewards import WorkerPool
            pool = WorkerPool(pool_targets.spin, num_workers=1, timeout_s=600)
            pool.submit()
            while not pool.worker_pids():
                time.sleep(0.05)
            print(pool.worker_pids()[0], flush=True)
            time.sleep(600)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    assert alive(worker_pid)
    parent.kill()
    parent.wait()
    assert wait_dead(worker_pid), "the worker outlived its killed parent"


def test_a_script_without_a_main_guard_can_use_the_pool(tmp_path: Path) -> None:
    """Workers never re-import the caller's __main__ (unlike multiprocessing's spawn)."""
    script = tmp_path / "plain_script.py"
    script.write_text(
        "import asyncio\n"
        "from rewards import MathEquivalence, Sample\n"
        "print(asyncio.run(MathEquivalence().score(Sample.from_completion('\\\\boxed{0.5}', '1/2'))).value)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1.0"
