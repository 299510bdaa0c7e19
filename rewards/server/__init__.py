"""The reward server: named rewards over HTTP for any trainer (`rewardgym serve`)."""

from rewards.server.app import ServerSettings, create_reward_app
from rewards.server.config import EnvEntry, Limits, RewardEntry, ServeConfig, ServeConfigError
from rewards.server.executors import InlineExecutor, ProcessExecutor, RewardSpec
from rewards.server.hosted import HostedReward, HostingLimits, QueueFull
from rewards.server.metrics import ServerMetrics

__all__ = [
    "EnvEntry",
    "HostedReward",
    "HostingLimits",
    "InlineExecutor",
    "Limits",
    "ProcessExecutor",
    "QueueFull",
    "RewardEntry",
    "RewardSpec",
    "ServeConfig",
    "ServeConfigError",
    "ServerMetrics",
    "ServerSettings",
    "create_reward_app",
]
