"""The `rewardgym` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import free_port, served


def rewardgym(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rewardgym", *args], capture_output=True, text=True, timeout=timeout
    )


def test_listings() -> None:
    envs_out = rewardgym("envs")
    assert envs_out.returncode == 0
    assert "rewardgym/Math-v0" in envs_out.stdout and "rewardgym/math" in envs_out.stdout
    rewards_out = rewardgym("rewards")
    assert rewards_out.returncode == 0
    assert "soft_overlong(max_length, cache_length, name='overlong')" in rewards_out.stdout


def test_eval_with_a_local_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = rewardgym(
        "eval", "--model", str(tiny_model_dir), "--env", "rewardgym/Math-v0", "--env-arg", "few_shot=2",
        "--num-tasks", "3", "--max-tokens", "4", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "rewardgym/Math-v0" in out.stdout and "format" in out.stdout  # the summary table
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["envs"][0]["episodes"] == 3
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 3


def test_eval_against_an_openai_endpoint(model_server: str, tmp_path: Path) -> None:
    out = rewardgym(
        "eval", "--base-url", model_server, "--model", "tiny", "--suite", "rewardgym/math",
        "--num-tasks", "2", "--max-tokens", "4", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [e["name"] for e in summary["envs"]] == ["rewardgym/Math-v0", "rewardgym/Arithmetic-v0"]


def test_eval_shows_a_progress_bar_on_stderr(model_server: str, tmp_path: Path) -> None:
    """Off a terminal, rich draws the bar once, finished, when the run ends."""
    out = rewardgym(
        "eval", "--base-url", model_server, "--model", "tiny", "--env", "rewardgym/Math-v0",
        "--num-tasks", "2", "--max-tokens", "4", "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"eval mean reward \d\.\d{3} .* 2/2 \d:\d\d:\d\d", out.stderr), out.stderr
    assert "mean reward" not in out.stdout  # the bar stays off stdout, which has the table


def test_eval_with_the_reward_served_over_http(model_server: str, tmp_path: Path) -> None:
    """RemoteReward as a drop-in: the same episodes scored by a reward server serving the
    environment give the same rewards as the environment's own reward, in-process."""
    common = ["eval", "--base-url", model_server, "--model", "tiny", "--env", "rewardgym/Math-v0",
              "--num-tasks", "4", "--max-tokens", "6", "--no-progress"]  # fmt: skip
    local = rewardgym(*common, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    with served(["serve", "--env", "rewardgym/Math-v0"], free_port()) as url:
        remote = rewardgym(*common, "--reward-url", url, "--out", str(tmp_path / "remote"))
        items = httpx.get(f"{url}/metrics").text
    assert remote.returncode == 0, remote.stderr
    assert 'rewardgym_items_total{reward="rewardgym/Math-v0"} 4.0' in items
    rows = {}
    for run in ("local", "remote"):
        samples = [json.loads(line) for line in (tmp_path / run / "samples.jsonl").read_text().splitlines()]
        rows[run] = sorted((s["task_id"], s["reward"], s["reward_error"]) for s in samples)
    assert rows["remote"] == rows["local"]
    assert all(error is None for _, _, error in rows["remote"])


def test_bad_arguments_fail_fast_with_one_clear_line(tmp_path: Path) -> None:
    bad_suite = tmp_path / "bad.toml"
    bad_suite.write_text('name = "x"\ncolour = 1\n[[members]]\nenv = "rewardgym/Math-v0"\n')
    heavy_suite = tmp_path / "heavy.toml"
    heavy_suite.write_text('name = "x"\n[[members]]\nenv = "rewardgym/Math-v0"\nweight = "heavy"\n')
    cases = [
        (["--suite", str(bad_suite)], "unknown keys ['colour']"),  # brackets survive the console markup
        (["--suite", str(heavy_suite)], "member 0 ('rewardgym/Math-v0'): 'weight' must be a finite number"),
        (["--env", "rewardgym/Maths-v0"], "unknown environment 'rewardgym/Maths-v0'. Did you mean"),
        (["--env-arg", "few_shot=9"], "few_shot must be between 0 and 4"),
        (["--env-arg", "nonsense"], "expected KEY=VALUE"),
        (["--suite", "rewardgym/math", "--env", "rewardgym/Math-v0"], "give --env or --suite, not both"),
        (["--model", str(tmp_path / "no-model")], "is not a local directory"),
        (["--suite", str(tmp_path / "missing.toml")], "suite file not found"),
        (["--remote-reward", "math"], "go with --reward-url"),
        (["--suite", "rewardgym/math", "--reward-url", "http://127.0.0.1:1"], "applies to --env;"),
    ]
    for args, message in cases:
        start = time.monotonic()
        out = rewardgym("eval", *args, "--no-progress")
        assert out.returncode == 2, (args, out.stderr)
        assert message in " ".join(out.stderr.split()), (args, out.stderr)
        assert "Traceback" not in out.stderr
        assert time.monotonic() - start < 60


def test_a_missing_optional_dependency_names_the_extra_to_install(tmp_path: Path) -> None:
    """A base install has no torch: blocking the import shows what such a user sees."""
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from rewardgym.cli import main\n"
        f"sys.exit(main(['eval', '--model', {str(tmp_path)!r}, '--num-tasks', '1']))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "this needs 'torch', which comes with: pip install 'rewardgym[train]'" in out.stderr
