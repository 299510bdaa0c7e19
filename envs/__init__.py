"""Gym-style multi-turn text environments, their task sources, groups and suites.

Importing `envs` registers the built-in environments under the `rewardgym/` gymnasium
namespace and loads third-party environments from the `rewardgym.envs` entry points.
"""

from envs.code_env import CodeEnv
from envs.code_tasks import code_task, code_tasks, humaneval_tasks, resolve_code_tasks
from envs.core import (
    Action,
    Episode,
    EpisodeNotRunning,
    MultiTurnEnv,
    Reaction,
    approximate_token_count,
)
from envs.groups import EnvGroup, GroupResult
from envs.math_env import MathEnv, math_reward
from envs.reasoning_gym_env import ReasoningGymEnv
from envs.registration import (
    NAMESPACE,
    UnknownEnvError,
    env_description,
    env_ids,
    load_env_plugins,
    make,
    register_builtin_envs,
    register_env,
)
from envs.spaces import ConversationSpace, ReplySpace, is_message
from envs.suites import (
    Suite,
    SuiteError,
    SuiteMember,
    get_suite,
    register_builtin_suites,
    register_suite,
    suite_names,
)
from envs.tasks import (
    GeneratedTasks,
    ReasoningGymTasks,
    Task,
    TaskFileError,
    TaskList,
    TaskSource,
    bundled_tasks,
    load_hf_dataset,
    load_jsonl,
    resolve_tasks,
)
from envs.tool_env import ToolEnv, ToolUse, answer_reward
from envs.tool_tasks import resolve_tool_tasks, tool_math_tasks
from rewards.types import Message

register_builtin_envs()
register_builtin_suites()
load_env_plugins()

__all__ = [
    "NAMESPACE",
    "Action",
    "CodeEnv",
    "ConversationSpace",
    "EnvGroup",
    "Episode",
    "EpisodeNotRunning",
    "GeneratedTasks",
    "GroupResult",
    "MathEnv",
    "Message",
    "MultiTurnEnv",
    "Reaction",
    "ReasoningGymEnv",
    "ReasoningGymTasks",
    "ReplySpace",
    "Suite",
    "SuiteError",
    "SuiteMember",
    "Task",
    "TaskFileError",
    "TaskList",
    "TaskSource",
    "ToolEnv",
    "ToolUse",
    "UnknownEnvError",
    "answer_reward",
    "approximate_token_count",
    "bundled_tasks",
    "code_task",
    "code_tasks",
    "env_description",
    "env_ids",
    "get_suite",
    "humaneval_tasks",
    "is_message",
    "load_env_plugins",
    "load_hf_dataset",
    "load_jsonl",
    "make",
    "math_reward",
    "register_env",
    "register_suite",
    "resolve_code_tasks",
    "resolve_tasks",
    "resolve_tool_tasks",
    "suite_names",
    "tool_math_tasks",
]
