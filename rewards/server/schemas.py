"""The reward server's requests and responses as pydantic models: they validate what comes
in and they are the OpenAPI schema (`GET /openapi.json`) that other trainers code against.

Field names follow `rewards.wire`; every model forbids unknown fields, so a typo in a
request is a 422 naming the field instead of a silently ignored option. OpenRLHF's request
is the exception: its client sends what it sends, so extra fields are ignored there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCallFunctionModel(BaseModel):
    name: str
    arguments: str


class ToolCallModel(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunctionModel


class MessageModel(BaseModel):
    """A chat message in OpenAI format (extra fields such as `name` pass through)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None
    tool_calls: list[ToolCallModel] | None = None
    tool_call_id: str | None = None


class SampleModel(_Strict):
    """One sample to score. Without `messages`, the conversation is `prompt` (as a user
    turn, if given) followed by `completion`."""

    completion: str = Field(description="the text under judgement, usually the last assistant reply")
    messages: list[MessageModel] | None = Field(default=None, description="the whole transcript")
    prompt: str | None = Field(default=None, description="shorthand for a one-turn transcript")
    reference: Any = Field(default=None, description="gold answer, tests or label; the reward's business")
    task_id: str = Field(default="", description="hosted environments fill a missing reference from it")
    info: dict[str, Any] = Field(default_factory=dict, description="task metadata")
    num_tokens: int | None = Field(default=None, ge=0, description="completion length in policy tokens")


class ScoreModel(BaseModel):
    """A reward's verdict. `value` is null exactly when `error` says why (JSON has no NaN)."""

    value: float | None
    components: dict[str, float | None] = Field(default_factory=dict)
    passed: bool | None = None
    error: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)


class ScoreRequest(_Strict):
    samples: list[SampleModel] = Field(min_length=1)


class ScoreResponse(BaseModel):
    reward: str
    scores: list[ScoreModel]
    errors: int = Field(description="items that carry an error instead of a value")
    elapsed_s: float


class GroupScoreRequest(_Strict):
    groups: list[Annotated[list[SampleModel], Field(min_length=1)]] = Field(
        min_length=1, description="each inner list: the G samples of one prompt"
    )


class GroupScoreResponse(BaseModel):
    reward: str
    scores: list[list[ScoreModel]]
    errors: int
    elapsed_s: float


class RewardDescription(BaseModel):
    name: str
    kind: Literal["sample", "group"] = Field(description="group rewards take all G samples of a prompt")
    summary: str
    source: str = Field(description="what the name serves: a registered reward or an environment's reward")
    parameters: dict[str, Any] = Field(description="the parameters this name was built with")
    signature: dict[str, str | None] | None = Field(
        description="every parameter the registered reward accepts: its default's repr, null where "
        "required; null when the name serves an environment's reward"
    )
    requests: dict[str, str] = Field(
        description="each endpoint that scores this reward and the schema of its body (a sample "
        "reward takes :score and :score_group, a group reward only :score_group)"
    )
    executor: Literal["inline", "process"]
    item_timeout_s: float | None
    max_batch_size: int
    max_queued: int


class RewardList(BaseModel):
    rewards: list[RewardDescription]


class Health(BaseModel):
    status: Literal["ok"]
    rewards: list[str]
    pid: int


class ErrorDetail(BaseModel):
    message: str
    type: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward request (`--remote_rm_url`): `query[i]` is prompt + response
    as one string, `prompts[i]` the prompt, `labels[i]` the reference."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


class OpenRLHFResponse(BaseModel):
    """`rewards` and `scores` are the same numbers; `extra_logs` holds one list per reward
    component plus `reward_error` (1.0 where the item failed and got the error value)."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]
