"""Failure counters for rate limits: one row a bucket, counting within a fixed window that resets it.

Shared by every store that limits attempts (claims with owner tokens, console sign-ins), so the counting is
written once; the buckets' names say what they count (an account, a user, an address).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jsd.registry.tables import rate_limits

__all__ = ["count_failures", "failure_counts"]


async def failure_counts(reader: AsyncEngine, buckets: Sequence[str], window_start: int) -> dict[str, int]:
    """The failures counted in this window, by bucket (buckets without any are left out)."""
    async with reader.connect() as conn:
        rows = await conn.execute(
            select(rate_limits.c.bucket, rate_limits.c.count).where(
                rate_limits.c.bucket.in_(list(buckets)), rate_limits.c.window_start == window_start
            )
        )
        return {r.bucket: int(r[1]) for r in rows}


async def count_failures(
    writer: AsyncEngine,
    amounts: Mapping[str, int],
    window_start: int,
    also: Callable[[AsyncConnection], Awaitable[None]] | None = None,
) -> None:
    """Add each amount to its bucket in this window (a bucket of an older window starts again), and run `also`
    in the same transaction. Two workers inserting the same new bucket collide: the loser tries again."""
    for attempt in range(3):
        try:
            async with writer.begin() as conn:
                for bucket, amount in amounts.items():
                    same_window = rate_limits.c.window_start == window_start
                    result = await conn.execute(
                        update(rate_limits)
                        .where(rate_limits.c.bucket == bucket)
                        .values(
                            count=case((same_window, rate_limits.c.count + amount), else_=amount),
                            window_start=window_start,
                        )
                    )
                    if result.rowcount == 0:
                        await conn.execute(
                            insert(rate_limits), {"bucket": bucket, "window_start": window_start, "count": amount}
                        )
                if also is not None:
                    await also(conn)
            return
        except IntegrityError:
            if attempt == 2:
                raise
