"""The host-local busy signal on a real file lock: judge calls wait for generations, generations
never wait for judge calls.

The generations here hold the signal until the test releases them, so what is asserted is the
order of events (the judge ran after the generation ended, the generation started while the
judge held the signal); wall-clock bounds are only used where a time is the point (a judge
that finds nothing generating does not wait; ``max_wait_s`` is honoured) and are generous,
so that a loaded 2-core machine keeps them."""
import asyncio
import fcntl
import os
import time

from llmops.common.busy import BusySignal

HOLD_S = 1.0        # how long a generation is known to hold the signal while a judge call waits
LONG_WAIT_S = 60.0  # a max_wait_s no passing test reaches: reaching it means the judge waited it out


class Generation:
    """A generation on the request path that holds the signal until ``release()``."""

    def __init__(self, signal: BusySignal) -> None:
        self.signal = signal
        self.started = asyncio.Event()
        self._release = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with self.signal.busy():
            self.started.set()
            await self._release.wait()

    def release(self) -> None:
        self._release.set()


def someone_holds(path) -> bool:
    """Whether a process (here: another open file) holds the lock, shared or exclusive."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


async def until(condition, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.01)


async def test_judge_waits_for_a_generation_and_never_the_other_way(tmp_path):
    path = tmp_path / "inference.busy"
    request_path, judge = BusySignal(path), BusySignal(path)   # two open files, as in two processes
    entered_after: list[bool] = []

    async def judge_call(gen: Generation) -> float:
        async with judge.idle(max_wait_s=LONG_WAIT_S) as waited:
            entered_after.append(gen.task.done())             # had the generation ended?
        return waited

    async with judge.idle(max_wait_s=LONG_WAIT_S) as waited:
        assert waited < 5.0                                    # nothing generates: no wait for max_wait_s

    # a judge call that starts during a generation waits until the generation has ended
    gen = Generation(request_path)
    await asyncio.wait_for(gen.started.wait(), 30)
    call = asyncio.create_task(judge_call(gen))
    await asyncio.sleep(HOLD_S)                                # the judge polls all along ...
    assert not call.done() and not entered_after               # ... and does not go ahead
    gen.release()
    waited = await asyncio.wait_for(call, 30)                  # it goes ahead once the generation ends
    assert entered_after == [True]                             # the judge ran after the generation
    assert 0.0 < waited < LONG_WAIT_S                          # it waited for it, not for max_wait_s
    await gen.task

    # a generation that starts during a judge call does not wait for it ...
    async with judge.idle(max_wait_s=LONG_WAIT_S):
        assert someone_holds(path)                             # the judge holds the signal
        gen = Generation(request_path)
        await asyncio.wait_for(gen.started.wait(), 30)         # it started while the judge held idle
        assert not gen.task.done()                             # and is generating, not failed
    # ... and takes the signal as soon as the judge call ends, so the next judge call waits
    await until(lambda: someone_holds(path), what="the generation to take the signal after the judge call")
    entered_after.clear()
    call = asyncio.create_task(judge_call(gen))
    await asyncio.sleep(HOLD_S)
    assert not call.done() and not entered_after
    gen.release()
    await asyncio.wait_for(call, 30)
    assert entered_after == [True]
    await gen.task

    # under saturation the judge still makes progress after max_wait_s
    max_wait_s = 2.0
    gen = Generation(request_path)
    await asyncio.wait_for(gen.started.wait(), 30)
    async with judge.idle(max_wait_s=max_wait_s) as waited:
        assert not gen.task.done()                             # the generation still holds the signal
        assert max_wait_s <= waited < max_wait_s + 8.0         # it waited max_wait_s, then went ahead
    gen.release()
    await gen.task
    request_path.close()
    judge.close()
