"""Following bookings: the one look for stuck bookings that readiness probes share."""

import asyncio
import logging
from datetime import timedelta

import pytest
from temporalio.service import RPCError, RPCStatusCode

from api.following import STUCK_CHECK_EVERY, StuckCheck
from deployment.bookings import Bookings
from deployment.stuck import Stuck

STUCK = [Stuck("bookings whose workflow task keeps failing", Bookings(1, ["a"]))]


class Looks:
    """Counts the looks taken; each answers `answer` after `pause` seconds, or raises it."""

    def __init__(self, answer: list[Stuck] | BaseException, pause: float = 0) -> None:
        self.answer, self.pause, self.taken = answer, pause, 0

    async def __call__(self) -> list[Stuck]:
        self.taken += 1
        await asyncio.sleep(self.pause)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


async def test_probes_within_the_interval_share_one_look() -> None:
    check, looks = StuckCheck(), Looks(STUCK)
    answers = await asyncio.gather(*(check.or_new(looks) for _ in range(5)))
    assert answers == [STUCK] + [[]] * 4  # the others took the last finding: none yet
    assert await check.or_new(looks) == STUCK
    assert looks.taken == 1


async def test_a_look_is_taken_again_once_the_interval_has_passed() -> None:
    check, looks = StuckCheck(), Looks(STUCK)
    await check.or_new(looks)
    check.at -= STUCK_CHECK_EVERY.total_seconds()
    await check.or_new(looks)
    assert looks.taken == 2


@pytest.mark.parametrize(
    "looks",
    [
        pytest.param(Looks([], pause=1), id="too slow"),
        pytest.param(Looks(RPCError("busy", RPCStatusCode.RESOURCE_EXHAUSTED, b"")), id="busy"),
    ],
)
async def test_a_look_too_slow_or_refused_as_too_busy_keeps_the_last_finding_and_says_so(
    looks: Looks, caplog: pytest.LogCaptureFixture
) -> None:
    check = StuckCheck(within=timedelta(seconds=0.05))
    await check.or_new(Looks(STUCK))
    check.at -= STUCK_CHECK_EVERY.total_seconds()
    with caplog.at_level(logging.WARNING, "api.following"):
        assert await check.or_new(looks) == STUCK
    assert "keeping the last" in caplog.text


async def test_any_other_refusal_reaches_the_caller() -> None:
    refused = RPCError("no", RPCStatusCode.PERMISSION_DENIED, b"")
    with pytest.raises(RPCError):
        await StuckCheck().or_new(Looks(refused))
