"""Direct vs. indirect RLAIF on the same prompts, end to end, with a written report.

1. Direct: GRPO on `rewardgym/Preference-v0`, each group rewarded by a judge tournament.
2. Indirect: the base policy's reply pairs labelled by the same judge, a Bradley–Terry
   reward model trained on them (held-out agreement reported), then GRPO on the same
   prompts with that model as the reward.
3. Evaluation on held-out prompts: base, direct and indirect policies' replies judged head to
   head by the evaluation judge (ideally a larger, separate one), plus side-by-side samples.

`rewardgym rlaif compare` and `examples/rlaif_compare.py` run it. With no judge URL given,
the embedded Gemma 270M is started as the judge (`rewardgym serve-model`) for the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envs.preference_env import SYSTEM_PROMPT, preference_tasks
from rewards.judges import JudgeConfig
from rewards.judges.shared import SHARED_JUDGES
from rewards.preference_data import PreferenceRecord
from trainer.config import TrainConfig
from trainer.engines.base import SamplingParams
from trainer.engines.transformers_engine import TransformersEngine
from trainer.local_server import rewardgym_server
from trainer.rlaif import (
    HeadToHead,
    JudgeAgreement,
    collect_preferences,
    head_to_head,
    judge_agreement,
    sample_replies,
    task_prompt,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass(frozen=True)
class JudgeEndpoint:
    base_url: str | None = None  # None: start `rewardgym serve-model` with `model` for the run
    model: str = "gemma-3-270m"
    api: str = "completions"


@dataclass(frozen=True)
class ComparisonSettings:
    out_dir: Path = Path("runs/rlaif-compare")
    direct_config: Path = EXAMPLES / "rlaif_direct.toml"
    indirect_config: Path = EXAMPLES / "rlaif_indirect.toml"
    judge: JudgeEndpoint = JudgeEndpoint()
    eval_judge: JudgeEndpoint | None = None  # None: the training judge also evaluates
    steps: int | None = None  # overrides both configs' steps
    pairs_per_prompt: int = 2  # preference pairs collected per training prompt (indirect)
    eval_replies_per_prompt: int = 2
    agreement_sample: int = 32  # preference pairs the evaluation judge re-judges (when it differs)
    overrides: tuple[str, ...] = ()  # `key=value` overrides applied to both training configs
    progress: bool = True


@dataclass
class ComparisonResult:
    report_path: Path
    summary: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def judge_endpoint(endpoint: JudgeEndpoint, log_path: Path) -> Iterator[JudgeEndpoint]:
    """The endpoint as given, or a `rewardgym serve-model` subprocess on a free loopback port."""
    if endpoint.base_url is not None:
        yield endpoint
        return
    argv = [
        "serve-model",
        "--model",
        endpoint.model,
        "--served-name",
        endpoint.model,
        "--chat-format",
        "plain",
    ]
    with rewardgym_server(argv, log_path=log_path) as url:
        yield JudgeEndpoint(f"{url}/v1", endpoint.model, endpoint.api)


def _judge_settings(endpoint: JudgeEndpoint, cache_dir: Path) -> dict[str, Any]:
    return {
        "base_url": endpoint.base_url,
        "model": endpoint.model,
        "api": endpoint.api,
        "cache_dir": str(cache_dir),
    }


def _judge_config(endpoint: JudgeEndpoint, cache_dir: Path) -> JudgeConfig:
    return JudgeConfig.from_mapping(_judge_settings(endpoint, cache_dir))


def _train(config_path: Path, run_dir: Path, overrides: Sequence[str], settings: ComparisonSettings) -> Path:
    """Train one policy; returns its final checkpoint's model directory."""
    from trainer.grpo import train

    steps = [f"steps={settings.steps}"] if settings.steps is not None else []
    config = TrainConfig.load(config_path, [*settings.overrides, *steps, f"run_dir={run_dir}", *overrides])
    train(config, progress=settings.progress)
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return run_dir / "checkpoints" / latest / "model"


def _judge_override(endpoint: JudgeEndpoint, cache_dir: Path) -> str:
    return f"rollout.env_kwargs.judge={json.dumps(_judge_settings(endpoint, cache_dir))}"


def _curve(run_dir: Path) -> dict[str, Any]:
    """First and last mean training reward, groups skipped over the run, and the run's mean
    group metrics (per group, e.g. a tournament's failed matchups and tie rate)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rewards = [r["reward/mean"] for r in rows if r.get("reward/mean") is not None]
    summary: dict[str, Any] = {"steps": float(len(rows)), "reward_first": rewards[0] if rewards else math.nan}
    summary["reward_last"] = rewards[-1] if rewards else math.nan
    summary["skipped_groups_total"] = int(sum(r.get("episodes/skipped_groups") or 0 for r in rows))
    for key in sorted({k for r in rows for k in r if k.startswith("group_metric/")}):
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        summary[key.removeprefix("group_metric/").removesuffix("/mean")] = sum(values) / len(values)
    return summary


def train_direct(
    settings: ComparisonSettings, judge: JudgeEndpoint, out: Path
) -> tuple[Path, dict[str, Any]]:
    """Direct RLAIF: GRPO with the judge tournament as reward. Returns the final model and the
    training summary, with the run's judge totals: the run's environments ask through one
    shared judge client (`rewards.judges.shared`), held here for the run, so its counters
    count every verdict of the run, failed ones (`failed_matchups_total`) included."""
    cache = out / "judge-cache"
    lease = SHARED_JUDGES.lease(_judge_config(judge, cache))
    try:
        model = _train(settings.direct_config, out / "direct", [_judge_override(judge, cache)], settings)
        counters = lease.client.counters()
    finally:
        lease.release()
    summary = _curve(out / "direct")
    summary["failed_matchups_total"] = counters["failed_pairs"]
    summary["judge_counters"] = counters
    return model, summary


async def _policy_replies(
    model: str | Path,
    chat_format: str,
    prompts_tasks: Sequence[Any],
    max_tokens: int,
    settings: ComparisonSettings,
    label: str,
) -> list[str]:
    engine = TransformersEngine.from_pretrained(model, chat_format=chat_format, device="cpu")  # type: ignore[arg-type]
    try:
        params = SamplingParams(max_tokens=max_tokens, temperature=1.0)
        replies = await sample_replies(
            engine,
            prompts_tasks,
            params,
            per_task=settings.eval_replies_per_prompt,
            system_prompt=SYSTEM_PROMPT,
            seed=10_000,
            progress=settings.progress,
            label=label,
        )
    finally:
        await engine.close()
    return [r for per_task in replies for r in per_task]


def _h2h_row(name: str, result: HeadToHead) -> dict[str, Any]:
    return {
        "matchup": name,
        "wins": result.wins,
        "losses": result.losses,
        "ties": result.ties,
        "failed": result.failed,
        "win_rate": result.win_rate,
        "mean_p": result.mean_p_x,
        "position_consistency": result.position_consistency,
    }


def run_comparison(settings: ComparisonSettings) -> ComparisonResult:
    """Run all three stages and write `report.md` and `report.json` in `settings.out_dir`."""
    from rewards.preference_model import PreferenceModel, train_preference_model

    out = settings.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}
    direct_config = TrainConfig.load(settings.direct_config, settings.overrides)
    base_model, chat_format = direct_config.model.name, direct_config.model.chat_format
    max_tokens = direct_config.rollout.max_tokens
    train_tasks = list(preference_tasks(split="train"))
    eval_tasks = list(preference_tasks(split="eval"))
    with judge_endpoint(settings.judge, out / "judge-server.log") as judge:
        cache = out / "judge-cache"
        # 1. direct RLAIF
        t0 = time.monotonic()
        direct_model, direct_training = train_direct(settings, judge, out)
        timings["direct_train_s"] = time.monotonic() - t0
        # 2. indirect RLAIF: preferences from the base policy, a reward model, then training
        t0 = time.monotonic()
        records, collect_counters = asyncio.run(
            _collect(
                base_model, chat_format, max_tokens, _judge_config(judge, cache), train_tasks, out, settings
            )
        )
        timings["collect_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        reward_model, rm_report = train_preference_model(records, progress=settings.progress)
        reward_model.save(out / "reward-model")
        timings["reward_model_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        indirect_model = _train(
            settings.indirect_config,
            out / "indirect",
            [f"rollout.env_kwargs.reward_model={json.dumps(str(out / 'reward-model'))}"],
            settings,
        )
        timings["indirect_train_s"] = time.monotonic() - t0
        # 3. evaluation on held-out prompts
        t0 = time.monotonic()
        replies = {
            name: asyncio.run(
                _policy_replies(model, chat_format, eval_tasks, max_tokens, settings, f"{name} replies")
            )
            for name, model in (("base", base_model), ("direct", direct_model), ("indirect", indirect_model))
        }
        prompts = [task_prompt(t) for t in eval_tasks for _ in range(settings.eval_replies_per_prompt)]
        with judge_endpoint(settings.eval_judge or judge, out / "eval-judge-server.log") as eval_judge:
            rejudge = records if settings.eval_judge is not None and eval_judge != judge else None
            results, agreement, eval_counters = asyncio.run(
                _evaluate(_judge_config(eval_judge, cache), prompts, replies, rejudge, settings)
            )
        loaded = PreferenceModel.load(out / "reward-model")
        rm_means = {name: sum(loaded.rewards(prompts, texts)) / len(texts) for name, texts in replies.items()}
        timings["evaluate_s"] = time.monotonic() - t0
    timings["total_s"] = time.monotonic() - started
    summary = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "judge": asdict(settings.judge),
        "eval_judge": asdict(settings.eval_judge) if settings.eval_judge else "same as the training judge",
        "direct_training": direct_training,
        "indirect_training": _curve(out / "indirect"),
        "preferences": {
            "pairs": len(records),
            "failed_verdicts": sum(1 for r in records if not r.ok),
            "stand_in_verdicts": sum(1 for r in records if r.ok and r.stand_in),
            "consistent": sum(1 for r in records if r.consistent),
            "judge_counters": collect_counters,
        },
        "reward_model": rm_report.to_dict(),
        "head_to_head": [_h2h_row(name, r) for name, r in results.items()],
        "judge_agreement": agreement.to_dict() if agreement is not None else "not measured: one judge",
        "eval_judge_counters": eval_counters,
        "reward_model_mean_on_eval_replies": rm_means,
        "timings_s": timings,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str))
    report = out / "report.md"
    report.write_text(render_report(summary, eval_tasks, replies, settings.eval_replies_per_prompt))
    return ComparisonResult(report, summary)


MATCHUPS = {
    "direct vs base": ("direct", "base"),
    "indirect vs base": ("indirect", "base"),
    "direct vs indirect": ("direct", "indirect"),
}


async def _evaluate(
    config: JudgeConfig,
    prompts: Sequence[str],
    replies: dict[str, list[str]],
    rejudge: Sequence[PreferenceRecord] | None,
    settings: ComparisonSettings,
) -> tuple[dict[str, HeadToHead], JudgeAgreement | None, dict[str, int]]:
    """The three matchups and, when the evaluation judge is another judge, its agreement with the
    training judge on a sample of the preference pairs; one client, made and closed in this loop."""
    client = config.client()
    try:
        judge = config.pairwise(client)
        results = {
            name: await head_to_head(
                judge, prompts, replies[x], replies[y], progress=settings.progress, label=name
            )
            for name, (x, y) in MATCHUPS.items()
        }
        agreement = None
        if rejudge is not None:
            agreement = await judge_agreement(
                judge, rejudge, sample=settings.agreement_sample, progress=settings.progress
            )
        return results, agreement, client.counters()
    finally:
        await client.close()


async def _collect(
    base_model: str,
    chat_format: str,
    max_tokens: int,
    config: JudgeConfig,
    tasks: Any,
    out: Path,
    settings: ComparisonSettings,
) -> tuple[list[Any], dict[str, int]]:
    engine = TransformersEngine.from_pretrained(base_model, chat_format=chat_format, device="cpu")  # type: ignore[arg-type]
    client = config.client()
    try:
        records = await collect_preferences(
            engine,
            config.pairwise(client),
            list(tasks),
            SamplingParams(max_tokens=max_tokens, temperature=1.0),
            pairs_per_task=settings.pairs_per_prompt,
            system_prompt=SYSTEM_PROMPT,
            out=out / "preferences.jsonl",
            progress=settings.progress,
        )
        return records, client.counters()
    finally:
        await client.close()
        await engine.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:300] or "*(empty)*"


_CURVE_COLUMNS = ("steps", "reward_first", "reward_last")


def _agreement_line(agreement: dict[str, Any] | str) -> str:
    if isinstance(agreement, str):
        return f"Agreement between the training and evaluation judges: {agreement}."
    return (
        f"The evaluation judge re-judged {agreement['pairs']} preference pairs "
        f"({agreement['failed']} failed): "
        f"agreement with the training judge **{_fmt(agreement['agreement'])}** (same winner or tie); "
        f"{_fmt(agreement['decisive_agreement'])} on the {agreement['decisive_pairs']} pairs both decided; "
        f"mean |ΔP(A)| {_fmt(agreement['mean_abs_p_diff'])}."
    )


def render_report(
    summary: dict[str, Any], eval_tasks: Sequence[Any], replies: dict[str, list[str]], per: int
) -> str:
    """The markdown report: training curves, reward model, head-to-head results, samples."""
    rm = summary["reward_model"]
    prefs = summary["preferences"]
    eval_judge = summary["eval_judge"]
    eval_judge_name = eval_judge if isinstance(eval_judge, str) else f"`{eval_judge['model']}`"
    lines = [
        "# Direct vs. indirect RLAIF",
        "",
        f"Judge: `{summary['judge']['model']}` ({summary['judge']['api']}); evaluation judge: "
        f"{eval_judge_name}.",
        f"Total wall time {summary['timings_s']['total_s']:.0f} s.",
        "",
        "## Training",
        "",
        "| run | steps | reward first | reward last | extra |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ("direct", "indirect"):
        curve = summary[f"{name}_training"]
        extra = ", ".join(
            f"{k} {_fmt(v)}"
            for k, v in curve.items()
            if k not in _CURVE_COLUMNS and isinstance(v, int | float) and not k.endswith("_total")
        )
        lines.append(
            f"| {name} | {curve['steps']:.0f} | {_fmt(curve['reward_first'])} | {_fmt(curve['reward_last'])} "
            f"| {extra or '-'} |"
        )
    direct = summary["direct_training"]
    lines += [
        "",
        f"Direct training: **{direct['failed_matchups_total']} judge verdicts failed** over the run "
        f"(matchups left out of their tournaments), {direct['skipped_groups_total']} groups skipped "
        f"(indirect: {summary['indirect_training']['skipped_groups_total']}). "
        f"Judge counters: {direct['judge_counters']}. Per-group means are in the extra column.",
        "",
        "Direct rewards are tournament win rates (0.5 on average by construction); indirect rewards are "
        "reward-model scores (only differences within a group matter).",
        "",
        "## Preferences and the reward model",
        "",
        f"{prefs['pairs']} pairs from the base policy; {prefs['failed_verdicts']} verdicts failed; "
        f"{prefs['stand_in_verdicts']} stand-in verdicts (unreadable, not trained on); "
        f"{prefs['consistent']} consistent in both positions. Judge counters: {prefs['judge_counters']}.",
        "",
        f"Reward model on `{rm['encoder']}`: {rm['n_train']} training pairs, {rm['n_eval']} held out "
        f"({rm['n_eval_prompts']} unseen prompts). Held-out agreement with the judge: "
        f"**{_fmt(rm['eval_agreement'])}** (train {_fmt(rm['train_agreement'])}; the 'longer reply wins' "
        f"baseline {_fmt(rm['length_baseline_eval_agreement'])}); held-out log loss "
        f"{_fmt(rm['eval_log_loss'])} vs. label entropy {_fmt(rm['eval_label_entropy'])}.",
        "",
        "## Held-out prompts, judged head to head",
        "",
        "| matchup | wins | losses | ties | failed | win rate | mean P(first wins) | position consistency |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary["head_to_head"]:
        lines.append(
            f"| {row['matchup']} | {row['wins']} | {row['losses']} | {row['ties']} | {row['failed']} "
            f"| {_fmt(row['win_rate'])} | {_fmt(row['mean_p'])} | {_fmt(row['position_consistency'])} |"
        )
    failed = sum(row["failed"] for row in summary["head_to_head"])
    lines += [
        "",
        f"{failed} evaluation verdicts failed. Evaluation judge counters: {summary['eval_judge_counters']}.",
        _agreement_line(summary["judge_agreement"]),
        "Reward-model score of each policy's held-out replies: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["reward_model_mean_on_eval_replies"].items()),
        "",
        "## Samples side by side",
        "",
        "| prompt | base | direct | indirect |",
        "| --- | --- | --- | --- |",
    ]
    for i, task in enumerate(eval_tasks[:8]):
        row = [_cell(task_prompt(task))] + [
            _cell(replies[name][i * per]) for name in ("base", "direct", "indirect")
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
