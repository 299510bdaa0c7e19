"""Readable rollout samples, written every N steps: what the policy actually said, and what
each answer earned, is the fastest check that a run learns the task and not a loophole.

Each step gets a Markdown file (for an editor or a terminal) and a self-contained HTML file
(for a browser). A group's shared prompt is shown once, then each member's own turns.
Completions are untrusted text: fenced in Markdown, escaped in HTML.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLES_DIR = "samples"
_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class SampleMember:
    """One completion of a group, with its score."""

    reward: float  # NaN when the reward failed
    advantage: float
    messages: tuple[dict[str, Any], ...]  # the whole conversation, prompt included
    components: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    finish_reasons: tuple[str, ...] = ()
    num_tokens: int = 0


@dataclass(frozen=True)
class SampleGroup:
    """The completions of one task (a GRPO group)."""

    env: str
    task_id: str
    reference: str | None
    members: tuple[SampleMember, ...]
    prompt_messages: int | None = None  # the opening's length (few-shot turns included), when known


def _number(value: float, *, signed: bool = False, nan: str = "error") -> str:
    if math.isnan(value):
        return nan
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _message_text(message: Mapping[str, Any]) -> str:
    """The message's text, with tool calls (if any) appended as JSON."""
    content = message.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:  # a list of content parts, or anything else: show it, never drop it
        text = json.dumps(content, ensure_ascii=False, indent=2, default=str)
    if message.get("tool_calls"):
        calls = json.dumps(message["tool_calls"], ensure_ascii=False, indent=2, default=str)
        text = f"{text}\n[tool calls]\n{calls}" if text else f"[tool calls]\n{calls}"
    return text


def _split(group: SampleGroup) -> tuple[tuple[dict[str, Any], ...], list[tuple[dict[str, Any], ...]]]:
    """(shared opening, each member's own turns): the opening is the longest run of leading
    non-assistant messages that every member has in common."""
    if not group.members:
        return (), []
    if group.prompt_messages is not None:
        n = group.prompt_messages
        return group.members[0].messages[:n], [member.messages[n:] for member in group.members]
    first = group.members[0].messages
    n = next((i for i, m in enumerate(first) if m.get("role") == "assistant"), len(first))
    for member in group.members[1:]:
        n = next((i for i in range(n) if i >= len(member.messages) or member.messages[i] != first[i]), n)
    return first[:n], [member.messages[n:] for member in group.members]


def _facts(member: SampleMember) -> list[str]:
    facts = []
    if member.components:
        facts.append("components: " + ", ".join(f"{k}={_number(v)}" for k, v in member.components.items()))
    facts.append(f"finish: {', '.join(member.finish_reasons) or '-'}")
    facts.append(f"tokens: {member.num_tokens}")
    return facts


def _title(index: int, member: SampleMember) -> str:
    reward = _number(member.reward)
    advantage = _number(member.advantage, signed=True, nan="n/a")
    return f"member {index} · reward {reward} · advantage {advantage}"


# --- Markdown -------------------------------------------------------------------------


def _fenced(text: str) -> str:
    """A code block no backtick run inside `text` can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _md_messages(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"**{m.get('role', '?')}**\n\n{_fenced(_message_text(m))}\n" for m in messages]


def render_markdown(step: int, groups: Sequence[SampleGroup]) -> str:
    """The step's samples as Markdown."""
    out = [f"# Samples at step {step}\n"]
    if not groups:
        out.append("_No groups this step._\n")
    for g, group in enumerate(groups, start=1):
        out.append(f"## {g}. {group.env} · task {group.task_id}\n")
        if group.reference is not None:
            out.append(f"**reference**\n\n{_fenced(group.reference)}\n")
        opening, turns = _split(group)
        if opening:
            out += ["### Prompt\n", *_md_messages(opening)]
        for i, (member, own) in enumerate(zip(group.members, turns, strict=True)):
            out.append(f"### {_title(i, member)}\n")
            out += [f"- {fact}" for fact in _facts(member)]
            out.append("")
            if member.error:
                out.append(f"**error**\n\n{_fenced(member.error)}\n")
            out += _md_messages(own)
    return "\n".join(out)


# --- HTML -----------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
section { border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 1em; margin: 1.5em 0; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0.2em 0; font-size: 0.9em; }
.msg { border-left: 4px solid #999; padding: 0.3em 0.6em; margin: 0.4em 0; background: #f7f7f7; }
.msg .role { font-size: 0.75em; font-weight: bold; text-transform: uppercase; color: #555; }
.role-system { border-color: #888; background: #f0f0f0; }
.role-user { border-color: #2b6cb0; background: #ebf4ff; }
.role-assistant { border-color: #2f855a; background: #f0fff4; }
.role-tool { border-color: #c05621; background: #fffaf0; }
details { margin: 0.6em 0; }
summary { cursor: pointer; font-weight: 600; }
.badge { display: inline-block; padding: 0 0.5em; border-radius: 4px; font-family: monospace; }
.pos { background: #c6f6d5; } .neg { background: #fed7d7; } .zero { background: #e2e8f0; }
.err { background: #feb2b2; color: #742a2a; }
.facts { color: #555; font-size: 0.85em; margin: 0.2em 0; }
.error pre { color: #9b2c2c; }
"""


def _sign_class(value: float) -> str:
    if math.isnan(value):
        return "err"
    return "pos" if value > 0 else "neg" if value < 0 else "zero"


def _html_messages(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for m in messages:
        role = str(m.get("role", "?"))
        css = f"role-{role}" if role in _ROLES else "role-other"
        out.append(
            f'<div class="msg {css}"><div class="role">{html.escape(role)}</div>'
            f"<pre>{html.escape(_message_text(m))}</pre></div>"
        )
    return out


def _html_member(index: int, member: SampleMember, own: Sequence[Mapping[str, Any]]) -> list[str]:
    reward = f'<span class="badge {_sign_class(member.reward)}">reward {_number(member.reward)}</span>'
    adv_text = _number(member.advantage, signed=True, nan="n/a")
    advantage = f'<span class="badge {_sign_class(member.advantage)}">advantage {adv_text}</span>'
    out = [f"<details open><summary>member {index} {reward} {advantage}</summary>"]
    out.append(f'<div class="facts">{html.escape(" · ".join(_facts(member)))}</div>')
    if member.error:
        out.append(f'<div class="error"><b>error</b><pre>{html.escape(member.error)}</pre></div>')
    out += _html_messages(own)
    out.append("</details>")
    return out


def render_html(step: int, groups: Sequence[SampleGroup]) -> str:
    """The step's samples as one self-contained HTML page (no scripts, no external files)."""
    title = f"Samples at step {step}"
    out = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    if not groups:
        out.append("<p><i>No groups this step.</i></p>")
    for g, group in enumerate(groups, start=1):
        out.append(f"<section><h2>{g}. {html.escape(group.env)} · task {html.escape(group.task_id)}</h2>")
        if group.reference is not None:
            out.append(f"<div><b>reference</b><pre>{html.escape(group.reference)}</pre></div>")
        opening, turns = _split(group)
        if opening:
            out += ["<h3>Prompt</h3>", *_html_messages(opening)]
        for i, (member, own) in enumerate(zip(group.members, turns, strict=True)):
            out += _html_member(i, member, own)
        out.append("</section>")
    out.append("</body></html>\n")
    return "\n".join(out)


def write_samples(run_dir: Path, step: int, groups: Sequence[SampleGroup]) -> list[Path]:
    """Write run_dir/samples/step_NNNNNN.md and .html; return both paths."""
    directory = Path(run_dir) / SAMPLES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    md_path = directory / f"step_{step:06d}.md"
    html_path = directory / f"step_{step:06d}.html"
    md_path.write_text(render_markdown(step, groups), encoding="utf-8")
    html_path.write_text(render_html(step, groups), encoding="utf-8")
    return [md_path, html_path]
