"""Prometheus metrics for the reward server (`GET /metrics`).

Each app owns its registry (no process-global state beyond what prometheus_client itself
needs). Under several uvicorn workers every worker writes its numbers to files in
`PROMETHEUS_MULTIPROC_DIR` and `/metrics`, whichever worker answers, sums them all:
`rewardgym serve --workers N` sets that directory up before the workers start.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    """Request, item and queue metrics, labelled by endpoint and reward name."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        r = self.registry
        self.requests = Counter(
            "rewardgym_requests",
            "HTTP requests answered, by endpoint, reward and status code",
            ["endpoint", "reward", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "rewardgym_request_seconds",
            "Time to answer a request, by endpoint and reward",
            ["endpoint", "reward"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.items = Counter("rewardgym_items", "Samples scored, by reward", ["reward"], registry=r)
        self.item_errors = Counter(
            "rewardgym_item_errors",
            "Samples whose score is an error (the reward raised or timed out), by reward",
            ["reward"],
            registry=r,
        )
        self.rejected = Counter(
            "rewardgym_rejected_items",
            "Samples refused with 429 because the reward's queue was full",
            ["reward"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "rewardgym_queue_depth",
            "Samples admitted and waiting for a scoring slot, by reward",
            ["reward"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_progress = Gauge(
            "rewardgym_items_in_progress",
            "Samples being scored now, by reward",
            ["reward"],
            registry=r,
            multiprocess_mode="livesum",
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        if self.multiprocess:
            combined = CollectorRegistry()
            MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)
