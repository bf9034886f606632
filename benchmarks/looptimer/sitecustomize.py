"""What holds the event loop: put this directory on PYTHONPATH and set TJG_LOOPTIMER=<file> for any
process (e.g. `tjg serve`). Every event-loop callback over 1 ms is counted by where its task resumed and
where it stopped, with the worst time; with TJG_GCLOG=<file> every cyclic-GC collection over 1 ms is logged
too (generation, ms). Both files are written at exit and on SIGUSR1. It found what docs/benchmarks.md says
about GET during a sync: a page's decode, the GC walking 10,000 decoded statuses, the idle watch's sift.
"""

from __future__ import annotations

import os

if os.environ.get("TJG_LOOPTIMER") or os.environ.get("TJG_GCLOG"):
    import asyncio
    import atexit
    import collections
    import gc
    import signal
    import time
    from typing import Any

    _slow: collections.Counter[str] = collections.Counter()
    _worst: dict[str, float] = {}
    _gcs: list[tuple[int, float]] = []

    def _where(handle: Any) -> str:
        task = getattr(handle._callback, "__self__", None)
        if not isinstance(task, asyncio.Task):
            return str(getattr(handle._callback, "__qualname__", type(handle._callback).__name__))
        frames, coro = [], task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                break
            frames.append(f"{'/'.join(frame.f_code.co_filename.split('/')[-2:])}:{frame.f_code.co_name}:"
                          f"{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return " > ".join(frames[-3:])

    if os.environ.get("TJG_LOOPTIMER"):
        _run = asyncio.events.Handle._run

        def _timed(self: Any) -> None:
            start, began = _where(self), time.perf_counter()
            _run(self)
            took = time.perf_counter() - began
            if took > 0.001:
                key = f"{start}  ==>  {_where(self)}"
                _slow[key] += 1
                _worst[key] = max(_worst.get(key, 0.0), took)

        asyncio.events.Handle._run = _timed  # type: ignore[method-assign]

    if os.environ.get("TJG_GCLOG"):
        _started: list[float] = [0.0]

        def _gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                _started[0] = time.perf_counter()
            elif (took := time.perf_counter() - _started[0]) > 0.001:
                _gcs.append((int(info["generation"]), round(took * 1000, 2)))

        gc.callbacks.append(_gc)

    def _dump(*_: Any) -> None:
        if os.environ.get("TJG_LOOPTIMER"):
            with open(os.environ["TJG_LOOPTIMER"], "w") as f:
                for key, n in _slow.most_common(40):
                    f.write(f"{n:6d}  worst {_worst[key] * 1000:7.2f} ms  {key}\n")
        if os.environ.get("TJG_GCLOG"):
            with open(os.environ["TJG_GCLOG"], "w") as f:
                f.writelines(f"gen {g}  {ms:7.2f} ms\n" for g, ms in _gcs)

    atexit.register(_dump)
    signal.signal(signal.SIGUSR1, _dump)
