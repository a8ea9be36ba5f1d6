"""The host-local busy signal on a real file lock: judge calls wait for generations, generations
never wait for judge calls."""
import asyncio
import time

from llmops.common.busy import BusySignal


async def test_judge_waits_for_a_generation_and_never_the_other_way(tmp_path):
    path = tmp_path / "inference.busy"
    request_path, judge = BusySignal(path), BusySignal(path)   # two open files, as in two processes

    async with judge.idle(max_wait_s=1.0) as waited:
        assert waited < 0.1                                       # nothing generates: no wait

    async def generate(seconds):
        with request_path.busy():
            await asyncio.sleep(seconds)

    gen = asyncio.create_task(generate(0.3))
    await asyncio.sleep(0.02)
    t0 = time.monotonic()
    async with judge.idle(max_wait_s=5.0) as waited:
        assert gen.done()                                         # the judge ran after the generation
    assert 0.2 < waited < 1.0 and time.monotonic() - t0 < 1.0

    # a generation that starts during a judge call does not wait for it ...
    async with judge.idle(max_wait_s=1.0):
        t0 = time.monotonic()
        gen = asyncio.create_task(generate(0.4))
        await asyncio.sleep(0.1)
        assert time.monotonic() - t0 < 0.2 and not gen.done()
    # ... and takes the signal as soon as the judge call ends, so the next judge call waits
    await asyncio.sleep(0.05)
    async with judge.idle(max_wait_s=5.0) as waited:
        assert gen.done() and waited > 0.1

    # under saturation the judge still makes progress after max_wait_s
    gen = asyncio.create_task(generate(1.0))
    await asyncio.sleep(0.02)
    async with judge.idle(max_wait_s=0.2) as waited:
        assert 0.2 <= waited < 0.5 and not gen.done()
    await gen
    request_path.close()
    judge.close()
