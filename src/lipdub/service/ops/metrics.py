"""Prometheus metrics, read from the store at scrape time.

Counting from the store rather than from in-process counters keeps the figures right
when workers run in other processes or machines (`lipdub worker`), and after restarts.
Every query is bounded: active tasks through the claim index, finished ones from the
task_stats counters kept by the transaction that finishes each task.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from lipdub.service.store import DURATION_BOUNDS_MS, Store

DURATION_BOUNDS_S = [b // 1000 for b in DURATION_BOUNDS_MS]


class StoreCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "lipdub_tasks", "Tasks in the store by model and state.", labels=["model", "state"]
        )
        for model, state, n in self.store.count_tasks():
            tasks.add_metric([model, state], n)
        yield tasks

        hist = HistogramMetricFamily(
            "lipdub_task_duration_seconds",
            "Time from acceptance to completion or failure, per model.",
            labels=["model"],
        )
        for model, cumulative, count, total_ms in self.store.task_durations():
            buckets = [
                (str(float(b)), c) for b, c in zip(DURATION_BOUNDS_S, cumulative, strict=True)
            ]
            buckets.append(("+Inf", count))
            hist.add_metric([model], buckets, sum_value=total_ms / 1000)
        yield hist

        deliveries = GaugeMetricFamily(
            "lipdub_callbacks", "Callback deliveries by outcome.", labels=["state"]
        )
        attempts = CounterMetricFamily(
            "lipdub_callback_attempts",
            "Callback HTTP attempts by delivery outcome.",
            labels=["state"],
        )
        for state, n, tries in self.store.count_deliveries():
            deliveries.add_metric([state], n)
            attempts.add_metric([state], tries)
        yield deliveries
        yield attempts


def make_registry(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry
