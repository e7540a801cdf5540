"""Persistence of claims: handing a device to an account with its owner token, spent tokens, failure counters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import Insert, Update, func, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jsd.registry.devices import SPENT_TOKEN
from jsd.registry.journal import AuditRecord, EventRecord, JournalledStore, write_records
from jsd.registry.ratelimits import count_failures, failure_counts
from jsd.registry.tables import devices, spent_owner_tokens

__all__ = ["ClaimStore"]


class ClaimStore(JournalledStore):
    """Owner tokens change hands here: a token that claimed or was replaced is spent for good."""

    async def claim(
        self, dev_eui: str, token_hash: str, account: str, audit: AuditRecord, events_: Iterable[EventRecord]
    ) -> bool:
        """Hand an unclaimed device to `account` if `token_hash` is still its token; the token is spent."""
        return await self._one_row(
            _unclaimed(dev_eui, token_hash).values(
                owner_account=account,
                owner_token_hash=None,
                claimed_at=datetime.now(UTC),
                home_net_id=None,
                astk_label=None,
                updated_at=func.now(),
            ),
            [audit],
            events_,
            then=_spend(token_hash),
        )

    async def replace_token(self, dev_eui: str, old_hash: str, new_hash: str, audit: AuditRecord) -> bool:
        """Give an unclaimed device a new owner token; the old one is spent (it may be on a lost label)."""
        return await self._one_row(
            _unclaimed(dev_eui, old_hash).values(owner_token_hash=new_hash, updated_at=func.now()),
            [audit],
            then=_spend(old_hash),
        )

    async def token_spent(self, token_hash: str) -> bool:
        """True if a claim ever used this token."""
        async with self._reader.connect() as conn:
            return (await conn.execute(SPENT_TOKEN, {"p_hash": token_hash})).first() is not None

    # -- failed-claim counters ----------------------------------------------------------------------

    async def failures(self, buckets: Sequence[str], window_start: int) -> dict[str, int]:
        return await failure_counts(self._reader, buckets, window_start)

    async def count_failure(
        self,
        buckets: Sequence[str] | Mapping[str, int],
        window_start: int,
        audit: AuditRecord,
        events_: Iterable[EventRecord] = (),
    ) -> None:
        """Add one failure to each bucket (or the given amount per bucket) in this window, with its records."""
        amounts = dict(buckets) if isinstance(buckets, Mapping) else dict.fromkeys(buckets, 1)

        async def records(conn: AsyncConnection) -> None:
            await write_records(conn, [audit], events_)

        await count_failures(self._writer, amounts, window_start, records)


def _unclaimed(dev_eui: str, token_hash: str) -> Update:
    return update(devices).where(
        devices.c.dev_eui == dev_eui, devices.c.owner_token_hash == token_hash, devices.c.owner_account.is_(None)
    )


def _spend(token_hash: str) -> Insert:
    return insert(spent_owner_tokens).values(token_hash=token_hash)
