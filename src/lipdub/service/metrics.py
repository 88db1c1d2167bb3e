"""Prometheus metrics, read from the store at scrape time.

Counting from the store rather than from in-process counters keeps the figures right
when workers run in other processes or machines (`lipdub worker`), and after restarts.
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

from lipdub.service.store import Store

DURATION_BOUNDS_S = [1, 5, 15, 30, 60, 120, 300, 600, 1800]


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
        for model, cumulative, count, total_ms in self.store.task_durations(
            [b * 1000 for b in DURATION_BOUNDS_S]
        ):
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
