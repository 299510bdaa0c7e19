"""The trainer's observability: metrics.jsonl, TensorBoard, plots, readable samples, `rewardgym plot`.

Real files, real matplotlib, real TensorBoard event files read back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rewardgym.cli import main
from trainer.metrics_log import MetricsLogger, read_metrics
from trainer.plot import PlotError, plot_run
from trainer.samples import SampleGroup, SampleMember, write_samples

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_jsonl_rows_flushed_at_once_with_nan_as_null(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, tensorboard=False) as metrics:
        metrics.log(1, {"loss": 0.5, "kl": math.nan, "grad_norm": math.inf, "lr": None, "episodes/errors": 2})
        # read while the logger is still open: a killed run keeps this line
        lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1
        row = json.loads(lines[0])  # strict JSON: no NaN/Infinity tokens
        assert row["step"] == 1 and isinstance(row["time"], float)
        assert row["loss"] == 0.5 and row["episodes/errors"] == 2
        assert row["kl"] is None and row["grad_norm"] is None and row["lr"] is None
        metrics.log(2, {"loss": 0.25})
        assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
        with pytest.raises(TypeError, match="'loss' must be a number"):
            metrics.log(3, {"loss": "high"})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="reserved"):
            metrics.log(3, {"step": 3})


def test_resume_truncates_after_the_checkpoint_and_drops_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(tmp_path, tensorboard=False) as metrics:
        for step in range(1, 6):
            metrics.log(step, {"loss": float(step)})
    with path.open("a") as f:
        f.write('{"step": 6, "lo')  # killed mid-write
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]  # the torn line is skipped

    with MetricsLogger(tmp_path, tensorboard=False, resume_step=3) as metrics:
        assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
        metrics.log(4, {"loss": 40.0})
        metrics.truncate_after(2)
        metrics.log(3, {"loss": 30.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_appending_after_a_torn_line_keeps_the_file_valid(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    with MetricsLogger(tmp_path, tensorboard=False) as metrics:
        metrics.log(2, {"loss": 2.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_read_metrics_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        read_metrics(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=":2: not a JSON line"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_tensorboard_scalars_and_resume_purge(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as metrics:
        for step in range(1, 5):
            metrics.log(step, {"reward/rewardgym/Math-v0/mean": step / 10, "kl": None})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _tensorboard_scalars(tmp_path, "reward/rewardgym/Math-v0/mean")
    assert [s for s, _ in scalars] == [1, 2, 3, 4]
    assert scalars[0][1] == pytest.approx(0.1)
    with MetricsLogger(tmp_path, resume_step=2) as metrics:
        metrics.log(3, {"reward/rewardgym/Math-v0/mean": 0.9})
    scalars = _tensorboard_scalars(tmp_path, "reward/rewardgym/Math-v0/mean")
    assert [(s, round(v, 3)) for s, v in scalars] == [(1, 0.1), (2, 0.2), (3, 0.9)]


def _synthetic_run(run_dir: Path, steps: int = 40) -> None:
    with MetricsLogger(run_dir, tensorboard=False) as metrics:
        for step in range(1, steps + 1):
            math_reward, arith_reward = 0.02 * step, 0.5 + 0.01 * (step % 7)
            metrics.log(
                step,
                {
                    "reward/mean": (math_reward + arith_reward) / 2,
                    "reward/std": 0.1,
                    "reward/rewardgym/Math-v0/mean": math_reward,
                    "reward/rewardgym/Arithmetic-v0/mean": arith_reward,
                    "component/format/mean": 1.0,
                    "loss": 1.0 / step,
                    "kl": None,  # entirely null: no panel
                    "entropy": math.nan if step == 3 else 2.0 - step / 100,
                    "clip_frac/low": 0.01,
                    "clip_frac/high": 0.02,
                    "length/completion_mean": 30 + step,
                    "time/rollout": 2.0,
                    "time/train": 1.0,
                    "steps/skipped_nan": 0,
                },
            )


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000, path


def test_plot_run_writes_pngs(tmp_path: Path) -> None:
    _synthetic_run(tmp_path)
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["reward.png", "metrics.png"]
    assert all(p.parent == tmp_path / "plots" for p in paths)
    for path in paths:
        _assert_png(path)


def test_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="no run directory"):
        plot_run(tmp_path / "missing")
    with pytest.raises(PlotError, match=r"no metrics\.jsonl"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PlotError, match="no rows"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 1.0, "kl": null}\n')
    with pytest.raises(PlotError, match="no non-null metrics"):
        plot_run(tmp_path)


def test_cli_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _synthetic_run(tmp_path / "run", steps=5)
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "pngs")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "pngs" / "reward.png"), str(tmp_path / "pngs" / "metrics.png")]
    for path in printed:
        _assert_png(Path(path))
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_samples_markdown_and_html(tmp_path: Path) -> None:
    prompt = ({"role": "system", "content": "Answer in \\boxed{}."}, {"role": "user", "content": "2+2?"})
    good = SampleMember(
        reward=1.0,
        advantage=0.707,
        messages=(*prompt, {"role": "assistant", "content": "It is \\boxed{4}"}),
        components={"format": 1.0, "math": 1.0},
        error=None,
        finish_reasons=("stop",),
        num_tokens=7,
    )
    evil = SampleMember(
        reward=math.nan,
        advantage=-0.707,
        messages=(
            *prompt,
            {"role": "assistant", "content": "<script>alert(1)</script>\n```\n# not a heading"},
        ),
        components={"format": 0.0},
        error="reward: timeout",
        finish_reasons=("length",),
        num_tokens=96,
    )
    group = SampleGroup(env="rewardgym/Math-v0", task_id="t-17", reference="4", members=(good, evil))
    md_path, html_path = write_samples(tmp_path, 12, [group])
    assert md_path == tmp_path / "samples" / "step_000012.md"
    assert html_path == tmp_path / "samples" / "step_000012.html"

    md = md_path.read_text()
    assert "rewardgym/Math-v0" in md and "t-17" in md
    assert "reward 1.000" in md and "advantage +0.707" in md and "reward error" in md
    assert "format=1.000, math=1.000" in md and "reward: timeout" in md
    assert md.count("2+2?") == 1  # the shared prompt is shown once
    assert "````text\n<script>alert(1)</script>\n```\n# not a heading\n````" in md  # a longer fence

    page = html_path.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "reward 1.000" in page and "reward error" in page and "advantage -0.707" in page
    assert page.count("2+2?") == 1 and "role-assistant" in page and "role-user" in page
