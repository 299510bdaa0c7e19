"""GRPO training throughput: our trainer (`trainer.grpo.train`) vs TRL's `GRPOTrainer`.

Both train the same small Llama (built here, hidden `--hidden`, `--layers` layers, a 384-token
byte-level BPE tokenizer, saved with save_pretrained and loaded by each trainer through
`from_pretrained`) in float32 on CPU, in this one process: ours first, then TRL (TRL is
imported only after our first run, so its import side effects cannot touch ours;
`--rounds` > 1 alternates them). Settings are matched: full fine-tuning, `--prompts`
prompts x `--group-size` completions per optimizer step (TRL: per_device_train_batch_size
= prompts x G, gradient_accumulation_steps = 1, num_iterations = 1; ours: groups_per_step =
prompts; both do the step's forward/backward as one batch), at most `--max-tokens` new
tokens, temperature 1, top-p 1, no top-k, no minimum length, beta = 0 (no KL and no
reference model), the GRPO loss (per-sequence token mean, clip 0.2/0.2), rewards scaled
by the group std, AdamW lr 1e-5 constant, gradient clipping 1.0, no vLLM, no gradient
checkpointing, no logging, evaluation or checkpoints while timed.

Task: prompts `Say something {i}.` (i < 16) and the reward of tests/LetterA-v0 (share of
the letter "a" in the reply, spaces removed). Ours renders them as its plain transcript
for a model without a chat template; TRL gets the same text as plain string prompts,
`"User: Say something {i}.\\nAssistant:"`. Ours also stops a reply at "\\nUser:" (the
plain format's stop string); TRL does not, so lengths can differ a little.

Measured: after `--warmup` steps, `--steps` consecutive full optimizer steps (generation +
reward + advantages + forward/backward + AdamW, and whatever each loop does between its
steps), from the start of the first timed step to the end of the last, in wall-clock
seconds and in this process's CPU seconds (all threads). TRL's steps are clocked by a
callback's `on_step_begin` / `on_step_end`; ours at the same points (a step starts when
`RolloutCollector.collect` is called and ends when its metrics row is logged; the bench
swaps in subclasses of those two classes that only read the clocks). Tokens: the sampled
completion tokens of the timed steps, EOS included, prompt tokens not. Ours:
`tokens_per_s * time/step` of each metrics row (the trainer's own count: the sum of the
loss mask); TRL: the lengths of the `completion_ids` its reward function receives (cut
after the first EOS, EOS included). tokens/s = tokens / wall seconds; tok/CPU-s = tokens /
CPU seconds. `rollout s` is generation plus reward (ours: `time/rollout`; TRL: its
`_generate_and_score_completions`, timed by wrapping it); `train s` is the rest of the
steps. Target: ours >= 1.5x TRL's tokens/s.

Threads: `--threads 1` (the default) runs torch single-threaded for both: that isolates
what the trainers themselves cost and stays stable on a shared machine. With torch's
default (`--threads 0`; 2 threads on a 2-core machine) the result depends on the machine.
On a quiet one TRL came out ~1.7x faster than ours: our transformers engine calls
generate() from a worker thread, where a second OpenMP thread does not help (the same
generate() took 0.26 s there and 0.12 s in the main thread). On a busy one, two OpenMP
threads per op in the main thread stalled on every op (1.5-10 s for that generate()) and
TRL came out 10x slower. Compare only runs with equal `--threads`.

    python bench/bench_trainer_vs_trl.py [--steps 10] [--warmup 2] [--group-size 8] [--prompts 4]
        [--max-tokens 32] [--hidden 256] [--layers 4] [--rounds 1] [--threads 1] [--json FILE]

Needs `pip install trl` (a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
TRAIN_ENVS = ROOT / "tests" / "train_envs.py"
NUM_TASKS = 16  # tests/LetterA-v0 has 16 tasks: "Say something 0." ... "Say something 15."
LR = 1e-5
SEED = 0


@dataclass
class Result:
    steps: int = 0
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # this process's CPU time (all its threads)
    tokens: int = 0
    completions: int = 0
    rollout_s: float = 0.0
    train_s: float = 0.0
    generate_calls: int = 0  # model.generate() batches in the timed steps (TRL: one per step)
    rewards: list[float] = field(default_factory=list)

    def add(self, other: Result) -> None:
        self.steps += other.steps
        self.seconds += other.seconds
        self.cpu_seconds += other.cpu_seconds
        self.tokens += other.tokens
        self.completions += other.completions
        self.rollout_s += other.rollout_s
        self.train_s += other.train_s
        self.generate_calls += other.generate_calls
        self.rewards += other.rewards

    @property
    def rate(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    @property
    def cpu_rate(self) -> float:
        return self.tokens / max(self.cpu_seconds, 1e-9)

    @property
    def mean_length(self) -> float:
        return self.tokens / max(self.completions, 1)


class StepClock:
    """Wall and CPU clock readings at the start and at the end of every optimizer step."""

    def __init__(self) -> None:
        self.begins: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []
        self.generate_calls: list[int] = []  # ours: the engine's generate() batches so far, per step

    def begin(self) -> None:
        self.begins.append((time.perf_counter(), time.process_time()))

    def end(self) -> None:
        self.ends.append((time.perf_counter(), time.process_time()))

    def window(self, first: int) -> tuple[float, float]:
        """(wall, CPU) seconds from the end of step `first - 1` to the end of the last step.

        Ends, not begins: with overlapped rollouts our step k+1 begins (collecting) while
        step k trains, so consecutive ends are what delimits one step's worth of work.
        """
        (wall0, cpu0), (wall1, cpu1) = self.ends[first - 1], self.ends[-1]
        return wall1 - wall0, cpu1 - cpu0

    def step_seconds(self, first: int) -> list[float]:
        return [end[0] - begin[0] for begin, end in zip(self.begins[first:], self.ends[first:], strict=True)]


def build_model(directory: Path, *, hidden: int, layers: int) -> Path:
    """A random Llama with a trained byte-level BPE tokenizer: tests/conftest.py's recipe, resized."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_model

    return build_tiny_model(directory, seed=SEED, hidden=hidden, layers=layers)


def letter_share(text: str) -> float:
    """tests/LetterA-v0's reward: the share of "a" among the reply's non-space characters."""
    text = text.strip().replace(" ", "")
    return text.count("a") / max(len(text), 1)


# -- ours ------------------------------------------------------------------------------------------


def run_ours(model_dir: Path, run_dir: Path, args: argparse.Namespace) -> Result:
    from trainer.config import TrainConfig
    from trainer.grpo import train
    from trainer.metrics_log import read_metrics

    total = args.warmup + args.steps
    batch = args.prompts * args.group_size
    config = TrainConfig.from_dict(
        {
            "run_dir": str(run_dir),
            "seed": SEED,
            "steps": total,
            "checkpoint_every": 10**9,  # the one checkpoint at the end is written after the last timed step
            "keep_checkpoints": 1,
            "samples_every": 10**9,  # samples are written after step 1 only (a warm-up step)
            "tensorboard": False,
            "imports": [str(TRAIN_ENVS)],
            "model": {"name": str(model_dir), "device": "cpu", "dtype": "float32", "chat_format": "plain"},
            "lora": {"enabled": False},
            "engine": {"kind": "transformers", "max_batch_size": max(batch, 1)},
            "rollout": {
                "env": "tests/LetterA-v0",
                "group_size": args.group_size,
                "groups_per_step": args.prompts,
                "max_tokens": args.max_tokens,
                "temperature": 1.0,
                "top_p": 1.0,
                "overlap": args.overlap,
            },
            "loss": {
                "algorithm": "grpo",
                "kl_coef": 0.0,
                "epochs": 1,
                "is_cap": 2.0 if args.overlap else None,
            },
            "optim": {"lr": LR, "micro_batch_size": batch, "max_grad_norm": 1.0},
        }
    )
    clock = StepClock()
    with _clocked(clock):
        train(config, progress=False)
    rows = read_metrics(run_dir / "metrics.jsonl")
    if not (len(rows) == len(clock.begins) == len(clock.ends) == total):
        raise RuntimeError(
            f"expected {total} steps, got {len(rows)} metrics rows and {len(clock.ends)} clocked steps"
        )
    timed = rows[args.warmup :]
    wall, cpu = clock.window(args.warmup)
    return Result(
        steps=len(timed),
        seconds=wall,
        cpu_seconds=cpu,
        tokens=sum(round(r["tokens_per_s"] * r["time/step"]) for r in timed),
        completions=len(timed) * batch,
        rollout_s=sum(r["time/rollout"] for r in timed),
        train_s=sum(
            s - r["time/rollout"] for s, r in zip(clock.step_seconds(args.warmup), timed, strict=True)
        ),
        rewards=[r["reward/mean"] for r in timed],
        generate_calls=clock.generate_calls[-1] - clock.generate_calls[args.warmup - 1],
    )


@contextlib.contextmanager
def _clocked(clock: StepClock) -> Iterator[None]:
    """Clock our loop's steps like TRL's callback does: a step starts when its rollouts are
    collected and ends when its metrics are logged (instrumentation only: the classes the loop
    uses are swapped for subclasses that read the clocks, nothing else changes)."""
    import trainer.grpo as grpo

    collector_class, logger_class = grpo.RolloutCollector, grpo.MetricsLogger

    class ClockedCollector(collector_class):  # type: ignore[misc, valid-type]
        async def collect(self, step: int) -> Any:
            clock.begin()
            try:
                return await super().collect(step)
            finally:
                clock.generate_calls.append(getattr(self.engine, "batches_run", 0))

    class ClockedLogger(logger_class):  # type: ignore[misc, valid-type]
        def log(self, step: int, metrics: Any) -> None:
            clock.end()
            super().log(step, metrics)

    grpo.RolloutCollector, grpo.MetricsLogger = ClockedCollector, ClockedLogger  # type: ignore[misc]
    try:
        yield
    finally:
        grpo.RolloutCollector, grpo.MetricsLogger = collector_class, logger_class  # type: ignore[misc]


# -- TRL -------------------------------------------------------------------------------------------


def run_trl(model_dir: Path, out_dir: Path, args: argparse.Namespace) -> Result:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    total = args.warmup + args.steps
    batch = args.prompts * args.group_size
    token_counts: list[int] = []  # per reward call = per optimizer step
    rewards_seen: list[float] = []

    def letter_a(completions: list[str], completion_ids: list[list[int]], **_: Any) -> list[float]:
        token_counts.append(sum(len(ids) for ids in completion_ids))
        values = [letter_share(c) for c in completions]
        rewards_seen.append(statistics.fmean(values))
        return values

    clock = StepClock()

    class ClockCallback(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            clock.begin()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            clock.end()

    dataset = Dataset.from_dict(
        {"prompt": [f"User: Say something {i}.\nAssistant:" for i in range(NUM_TASKS)]}
    )
    config = GRPOConfig(
        output_dir=str(out_dir),
        seed=SEED,
        max_steps=total,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=args.group_size,
        num_iterations=1,
        max_completion_length=args.max_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        beta=0.0,
        epsilon=0.2,
        loss_type="grpo",
        scale_rewards="group",
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_vllm=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    threads = torch.get_num_threads()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=letter_a,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[ClockCallback()],
    )
    rollout_times: list[float] = []
    generate_and_score = trainer._generate_and_score_completions

    def timed_generate_and_score(*a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return generate_and_score(*a, **kw)
        finally:
            rollout_times.append(time.perf_counter() - start)

    trainer._generate_and_score_completions = timed_generate_and_score  # type: ignore[method-assign]
    trainer.remove_callback(PrinterCallback)  # it prints the run's summary dict even with logging off
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"GRPOTrainer changed torch's threads from {threads} to {torch.get_num_threads()}")
    trainer.train()
    if not (len(clock.begins) == len(clock.ends) == len(token_counts) == len(rollout_times) == total):
        raise RuntimeError(
            f"expected {total} steps with one generation each, got {len(clock.ends)} steps, "
            f"{len(token_counts)} reward calls, {len(rollout_times)} generations"
        )
    w = args.warmup
    wall, cpu = clock.window(w)
    return Result(
        steps=args.steps,
        seconds=wall,
        cpu_seconds=cpu,
        tokens=sum(token_counts[w:]),
        completions=args.steps * batch,
        rollout_s=sum(rollout_times[w:]),
        train_s=sum(s - r for s, r in zip(clock.step_seconds(w), rollout_times[w:], strict=True)),
        rewards=rewards_seen[w:],
        generate_calls=args.steps,
    )


# -- report ----------------------------------------------------------------------------------------


def report(ours: Result, trl: Result, args: argparse.Namespace) -> None:
    print()
    print(
        f"GRPO on CPU, {args.prompts} prompts x G={args.group_size} = {args.prompts * args.group_size} "
        f"completions/step, max {args.max_tokens} new tokens, full fine-tuning, float32, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'trainer':7s} {'steps':>5s} {'wall s':>7s} {'s/step':>6s} {'rollout s':>9s} {'train s':>7s} "
        f"{'CPU s':>6s} {'tokens':>6s} {'tokens/s':>8s} {'tok/CPU-s':>9s} {'mean len':>8s} {'reward':>6s}"
    )
    for name, r in (("ours", ours), ("TRL", trl)):
        reward = statistics.fmean(r.rewards) if r.rewards else float("nan")
        print(
            f"{name:7s} {r.steps:5d} {r.seconds:7.2f} {r.seconds / max(r.steps, 1):6.3f} {r.rollout_s:9.2f} "
            f"{r.train_s:7.2f} {r.cpu_seconds:6.2f} {r.tokens:6d} {r.rate:8.1f} {r.cpu_rate:9.1f} "
            f"{r.mean_length:8.1f} {reward:6.3f}"
        )
    print()
    low, high = sorted((ours.mean_length, trl.mean_length))
    if low < 0.8 * high:
        print(
            f"note: mean completion lengths differ ({ours.mean_length:.1f} vs {trl.mean_length:.1f} "
            "tokens; sampling differs, e.g. ours stops at '\\nUser:'); tokens/s still compares "
            "the same work per token"
        )
    if ours.generate_calls > ours.steps:
        print(
            f"note: our engine split the timed steps' {ours.completions} requests into {ours.generate_calls} "
            f"generate() batches ({ours.steps} would be one per step): its batching window closed early"
        )
    print(f"CPU-time ratio ours/TRL = {ours.cpu_rate / max(trl.cpu_rate, 1e-9):.2f}x (tokens per CPU-second)")
    mode = "ours with overlapped rollouts" if args.overlap else "both synchronous"
    print(f"ratio ours/TRL = {ours.rate / max(trl.rate, 1e-9):.2f}x (wall tokens/s, {mode}; target >= 1.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per trainer and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1)")
    parser.add_argument("--group-size", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per optimizer step")
    parser.add_argument("--max-tokens", type=int, default=32, help="most new tokens per completion")
    parser.add_argument("--hidden", type=int, default=256, help="model hidden size")
    parser.add_argument("--layers", type=int, default=4, help="model layers")
    parser.add_argument("--rounds", type=int, default=1, help="alternate ours/TRL this many times")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads for both (0 = torch's default)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="ours with rollout.overlap (next step generated while this one trains; one step off-policy, "
        "with truncated importance sampling); TRL has no such mode",
    )
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be >= 1")
    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    ours, trl = Result(), Result()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as scratch:
        root = Path(scratch)
        model_dir = build_model(root / "model", hidden=args.hidden, layers=args.layers)
        params = sum(p.numel() for p in _load(model_dir).parameters())
        print(f"model: Llama, hidden {args.hidden}, {args.layers} layers, {params / 1e6:.2f} M parameters")
        for round_index in range(args.rounds):
            mine = run_ours(model_dir, root / f"ours-{round_index}", args)
            theirs = run_trl(model_dir, root / f"trl-{round_index}", args)
            print(
                f"round {round_index + 1}: ours {mine.rate:.1f} tokens/s, TRL {theirs.rate:.1f} tokens/s, "
                f"ratio {mine.rate / max(theirs.rate, 1e-9):.2f}x",
                flush=True,
            )
            ours.add(mine)
            trl.add(theirs)
    report(ours, trl, args)
    if args.json:
        data = {
            name: {**r.__dict__, "tokens_per_s": r.rate, "mean_length": r.mean_length}
            for name, r in (("ours", ours), ("trl", trl))
        }
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **data}, indent=2))


def _load(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


if __name__ == "__main__":
    main()
