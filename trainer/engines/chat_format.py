"""Turning conversations into prompt tokens, and multi-turn episodes into one token sequence.

Base models (like the embedded Gemma 3 270M) have no chat template, so we render a plain
transcript they can continue, and stop generation where the next user turn would begin.

For training, a multi-turn episode must be one token sequence built from the engine's own
sampled ids (re-tokenizing generated text changes tokens and breaks the logprobs). The
`ChatRenderer` gives the prompt's ids once, and after each reply only the ids that close
the assistant turn, add the environment's messages and open the next assistant turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from rewards.types import Message

PLAIN_STOP = ("\nUser:",)
_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "tool": "Tool"}
_MARK = "\u2063rewardgym-reply\u2063"  # a reply no model writes, to find the template's turn ending

ChatFormat = Literal["auto", "template", "plain"]
ToolSchemas = Sequence[Mapping[str, Any]]


def render_plain(messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
    """System text, then `User: ...` / `Assistant: ...` turns, ending with `Assistant:`."""
    parts: list[str] = []
    for message in messages:
        content = (message.get("content") or "").strip()
        role = message["role"]
        if role == "system":
            parts.append(f"{content}\n\n")
        elif role == "assistant":
            parts.append(f"Assistant: {content}\n\n")
        else:
            parts.append(f"{_ROLE_NAMES.get(role, role.title())}: {content}\n")
    return "".join(parts) + ("Assistant:" if generation_prompt else "")


class ChatRenderer:
    """Prompt ids for a conversation, and continuation ids between the turns of an episode.

    `chat_format`: "template" uses the tokenizer's chat template, "plain" the `User:` /
    `Assistant:` transcript (for base models); "auto" picks the template when there is one.
    """

    def __init__(self, tokenizer: Any, chat_format: ChatFormat = "auto") -> None:
        if chat_format == "auto":
            chat_format = "template" if getattr(tokenizer, "chat_template", None) else "plain"
        if chat_format == "template" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_format='template' but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.chat_format: ChatFormat = chat_format
        self.stop: tuple[str, ...] = PLAIN_STOP if chat_format == "plain" else ()
        self.turn_end = self._turn_end()  # text the format puts after an assistant reply

    def prompt_ids(self, messages: Sequence[Message], *, tools: ToolSchemas | None = None) -> list[int]:
        """The whole conversation, ending where the assistant's reply begins.

        `tools` go to the chat template; the plain format has no place for them."""
        if self.chat_format == "template":
            ids = self.tokenizer.apply_chat_template(
                list(messages),
                tools=_tools(tools),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
            return list(ids)
        if tools:
            raise ValueError(
                "tool schemas can only be given natively through a chat template (or a chat server); "
                "for a base model without one, describe the tools in the prompt (ToolEnv prompt_style "
                "'json' or 'tags')"
            )
        return list(self.tokenizer(render_plain(messages)).input_ids)

    def continuation_ids(
        self,
        history: Sequence[Message],
        new_messages: Sequence[Message],
        reply_ids: Sequence[int],
        *,
        tools: ToolSchemas | None = None,
    ) -> list[int]:
        """Ids to append after a sampled reply: its turn ending, `new_messages`, the next turn's start.

        `history` is the conversation up to and including that reply. When the reply ends in
        the end-of-sequence token the template's own turn ending starts with, that part is
        not repeated.
        """
        text = self.continuation_text(history, new_messages, reply_ids, tools=tools)
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def continuation_text(
        self,
        history: Sequence[Message],
        new_messages: Sequence[Message],
        reply_ids: Sequence[int],
        *,
        tools: ToolSchemas | None = None,
    ) -> str:
        """The text `continuation_ids` tokenizes (to locate messages in it)."""
        text = self._turn_tail(history, new_messages, tools)
        turn_end = self.turn_end
        eos_text = self._eos_text(reply_ids)
        if eos_text and turn_end.startswith(eos_text):
            turn_end = turn_end[len(eos_text) :]
        return turn_end + text

    # -- helpers ---------------------------------------------------------------------------------

    def _turn_tail(
        self, history: Sequence[Message], new_messages: Sequence[Message], tools: ToolSchemas | None
    ) -> str:
        """Text the format renders for `new_messages` plus the next assistant turn's opening."""
        if self.chat_format == "plain":
            return render_plain(new_messages)
        before = self._template_text(list(history), generation_prompt=False, tools=tools)
        after = self._template_text([*history, *new_messages], generation_prompt=True, tools=tools)
        if not after.startswith(before):
            raise ValueError(
                "the chat template renders earlier turns differently once later ones are added "
                "(e.g. it drops past reasoning); multi-turn training needs a prefix-stable template"
            )
        return after[len(before) :]

    def _turn_end(self) -> str:
        if self.chat_format == "plain":
            return "\n\n"
        probe: list[Message] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARK}]
        text = self._template_text(probe, generation_prompt=False)
        if _MARK not in text:
            raise ValueError("the chat template does not render assistant replies verbatim")
        return text[text.index(_MARK) + len(_MARK) :]

    def _template_text(
        self, messages: list[Message], *, generation_prompt: bool, tools: ToolSchemas | None = None
    ) -> str:
        return str(
            self.tokenizer.apply_chat_template(
                messages, tools=_tools(tools), add_generation_prompt=generation_prompt, tokenize=False
            )
        )

    def _eos_text(self, reply_ids: Sequence[int]) -> str:
        if not reply_ids:
            return ""
        last = reply_ids[-1]
        if last not in self.tokenizer.all_special_ids:
            return ""
        return str(self.tokenizer.decode([last], skip_special_tokens=False))


def _tools(tools: ToolSchemas | None) -> list[dict[str, Any]] | None:
    return [dict(t) for t in tools] if tools else None
