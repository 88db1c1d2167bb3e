"""Counts for metrics and retention: tasks and deliveries by state, the duration
histogram (from the running totals, cheap at any table size), and the finished tasks
whose files are past retention."""

from __future__ import annotations

from sqlalchemy import func, select, update

from lipdub.service.store import tables as t
from lipdub.service.store.base import ACTIVE_STATES, DURATION_BOUNDS_MS, Row, StoreBase


class StatsStore(StoreBase):
    def tasks_to_purge(self, completed_before_ms: int, limit: int = 100) -> list[Row]:
        with self.engines.read.connect() as conn:
            return list(
                conn.execute(
                    select(t.tasks.c.id, t.tasks.c.model, t.tasks.c.result_json)
                    .where(t.tasks.c.complete_ms < completed_before_ms, t.tasks.c.purged == 0)
                    .limit(limit)
                ).mappings()
            )

    def mark_purged(self, task_id: str) -> None:
        with self.engines.write.begin() as conn:
            conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(purged=1))

    def count_tasks(self) -> list[tuple[str, str, int]]:
        """Tasks per (model, state): active ones counted through the claim index (they
        are few), finished ones from task_stats: cheap at any table size."""
        with self.engines.read.connect() as conn:
            active = conn.execute(
                select(t.tasks.c.model, t.tasks.c.state, func.count())
                .where(t.tasks.c.state.in_(ACTIVE_STATES))
                .group_by(t.tasks.c.model, t.tasks.c.state)
            )
            out = [(r[0], r[1], int(r[2])) for r in active]
            finished = conn.execute(
                select(t.task_stats.c.model, t.task_stats.c.state, func.sum(t.task_stats.c.n))
                .group_by(t.task_stats.c.model, t.task_stats.c.state)
            )
            return out + [(r[0], r[1], int(r[2])) for r in finished]

    def count_deliveries(self) -> list[tuple[str, int, int]]:
        """(state, deliveries, attempts) per delivery state: pending ones counted through
        the due index, final ones from delivery_stats."""
        d = t.deliveries.c
        with self.engines.read.connect() as conn:
            pending = conn.execute(
                select(func.count(), func.sum(d.attempts)).where(d.state == "pending")
            ).one()
            out = [("pending", int(pending[0]), int(pending[1] or 0))] if pending[0] else []
            final = conn.execute(select(t.delivery_stats))
            return out + [(r[0], int(r[1]), int(r[2])) for r in final]

    def task_durations(self) -> list[tuple[str, list[int], int, int]]:
        """Per model: cumulative counts of finished tasks at or under each of
        DURATION_BOUNDS_MS, count, and sum of durations, for a Prometheus histogram (from
        the store, so it covers workers in every process; from task_stats, so cheap)."""
        with self.engines.read.connect() as conn:
            rows = conn.execute(
                select(
                    t.task_stats.c.model, t.task_stats.c.bucket,
                    func.sum(t.task_stats.c.n), func.sum(t.task_stats.c.sum_ms),
                ).group_by(t.task_stats.c.model, t.task_stats.c.bucket)
            ).all()
        per_model: dict[str, list[int]] = {}
        sums: dict[str, int] = {}
        for model, bucket, n, total in rows:
            counts = per_model.setdefault(model, [0] * (len(DURATION_BOUNDS_MS) + 1))
            counts[int(bucket)] += int(n)
            sums[model] = sums.get(model, 0) + int(total or 0)
        out = []
        for model, counts in sorted(per_model.items()):
            cumulative, running = [], 0
            for c in counts[:-1]:
                running += c
                cumulative.append(running)
            out.append((model, cumulative, sum(counts), sums[model]))
        return out
