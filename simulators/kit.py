"""What both vendor simulators share: fault injection, a lifecycle clock, request stats, start-up."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import math
import os
import pickle
import random
import time
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

FAULT_KEYS = ("http503", "http429", "reset", "delay_ms", "drop_after_commit")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorBody = Callable[[int, str], dict[str, Any]]


def parse_faults(text: str) -> dict[str, float]:
    """Parse `http503=0.2,reset=0.05,delay_ms=20` into a dict; unknown keys are an error."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in FAULT_KEYS:
            raise ValueError(f"{part!r}: expected one of {', '.join(FAULT_KEYS)} as key=value")
        out[key] = check_fault(key, value)
    return out


def parse_amounts(text: str, what: str) -> dict[str, float]:
    """Parse `a100=8,h100=4` (a name and a number >= 0 each) into a dict; `what` names the option in errors."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not key.strip() or not 0 <= amount < float("inf"):
            raise ValueError(f"{what}: {part!r}: expected NAME=N with N a number >= 0")
        out[key.strip()] = amount
    return out


def check_fault(key: str, value: Any) -> float:
    """Validate one fault setting: rates are 0..1, delay_ms is >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: {value!r} is not a number") from err
    if key == "delay_ms":
        if v < 0:
            raise ValueError("delay_ms must be >= 0")
    elif not 0 <= v <= 1:
        raise ValueError(f"{key} is a rate between 0 and 1")
    return v


COMMITTED = web.RequestKey("sim_committed", bool)


class DropConnection(Exception):
    """Raised by a handler to drop the connection after its change was applied."""


@dataclass
class FaultState:
    """Fault rates and a seeded RNG; each request draws the same count of numbers, so a seed
    reproduces the same fault sequence for the same request sequence."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    log: list[tuple[int, str, str]] = field(default_factory=list)
    n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def set(self, rates: dict[str, Any]) -> None:
        """Replace the rates (validated)."""
        clean = {}
        for k, v in rates.items():
            if k not in FAULT_KEYS:
                raise ValueError(f"unknown fault {k!r}; known: {', '.join(FAULT_KEYS)}")
            clean[k] = check_fault(k, v)
        self.rates = clean

    def roll(self, path: str) -> tuple[str | None, bool]:
        """Pick this request's fault (before the handler) and whether a commit is dropped."""
        self.n += 1
        draws = [self.rng.random() for _ in range(4)]
        fault = None
        if draws[0] < self.rates.get("reset", 0):
            fault = "reset"
        elif draws[1] < self.rates.get("http503", 0):
            fault = "http503"
        elif draws[2] < self.rates.get("http429", 0):
            fault = "http429"
        drop = draws[3] < self.rates.get("drop_after_commit", 0)
        if fault or drop:
            self.log.append((self.n, path, fault or "drop_after_commit"))
        return fault, drop


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def sim_middlewares(faults: FaultState, stats: Counter[str], error_body: ErrorBody,
                    on_commit: Callable[[], None] | None = None) -> list[Any]:
    """Middlewares that count requests and inject faults on vendor (non-/_sim/) paths; `on_commit` is
    called after each request that changed the simulator's state."""

    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        stats[f"{request.method} {template}"] += 1
        fault, drop = faults.roll(f"{request.method} {template}")
        delay = faults.rates.get("delay_ms", 0)
        if delay:
            await asyncio.sleep(delay / 1000)
        if fault == "reset":
            await request.read()
            _abort(request)
            raise DropConnection()
        if fault == "http503":
            return web.json_response(error_body(503, "Service unavailable (simulated fault)"), status=503)
        if fault == "http429":
            return web.json_response(error_body(429, "Too many requests (simulated fault)"), status=429,
                                     headers={"Retry-After": "1"})
        resp = await handler(request)
        if on_commit is not None and request.get(COMMITTED):
            on_commit()
        if drop and request.get(COMMITTED):
            _abort(request)
            raise DropConnection()
        return resp

    @web.middleware
    async def swallow_drop(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except DropConnection:
            # The transport is gone; answer nothing. aiohttp discards the unsent response.
            return web.Response(status=599)
        except web.HTTPRequestEntityTooLarge as exc:  # (aiohttp's own answer is plain text)
            return web.json_response(error_body(413, f"request body too large: {exc.text or ''}".strip(": ")),
                                     status=413)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            # The router's own answers are text/plain; a vendor answers unknown routes in its error shape.
            if request.match_info.route.resource is not None:
                raise
            what = "no such resource" if exc.status == 404 else f"method {request.method} not allowed"
            allow = {"Allow": ", ".join(sorted(exc.allowed_methods))} \
                if isinstance(exc, web.HTTPMethodNotAllowed) else {}  # (RFC 9110: a 405 says what is allowed)
            return web.json_response(error_body(exc.status, f"{what}: {request.path}"), status=exc.status,
                                     headers=allow)

    return [swallow_drop, inject]


def sim_admin_routes(app: web.Application, faults: FaultState, stats: Counter[str]) -> None:
    """GET/PUT /_sim/faults, GET/DELETE /_sim/stats, GET /_sim/fault-log."""

    async def get_faults(_: web.Request) -> web.Response:
        return web.json_response(faults.rates)

    async def put_faults(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            faults.set(body)
        except ValueError as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(faults.rates)

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response({"total": sum(stats.values()), "requests": dict(stats)})

    async def reset_stats(_: web.Request) -> web.Response:
        stats.clear()
        return web.json_response({"total": 0, "requests": {}})

    async def fault_log(_: web.Request) -> web.Response:
        return web.json_response([{"n": n, "request": p, "fault": f} for n, p, f in faults.log])

    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_put("/_sim/faults", put_faults)
    app.router.add_get("/_sim/stats", get_stats)
    app.router.add_delete("/_sim/stats", reset_stats)
    app.router.add_get("/_sim/fault-log", fault_log)


class Timeline:
    """A job's scheduled phases on the monotonic clock; the current phase is read, never ticked,
    so twenty thousand jobs cost nothing while idle."""

    __slots__ = ("at", "phases", "watch")

    def __init__(self, start: float, steps: list[tuple[float, Any]]) -> None:
        self.at: list[float] = []
        self.phases: list[Any] = []
        self.watch: Callable[[float], None] | None = None  # told of every phase change scheduled (ChangeIndex)
        self.extend(start, steps)

    def __getstate__(self) -> dict[str, Any]:
        return {"at": self.at, "phases": self.phases}  # (the watch is the process's, not the job's)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # saved before the watch: (None, slots)
            state = state[1]
        self.at, self.phases, self.watch = state["at"], state["phases"], None

    def extend(self, start: float, steps: list[tuple[float, Any]]) -> None:
        """Append phases at start + offset (offsets already scaled by the clock speed)."""
        for offset, phase in steps:
            self.at.append(start + offset)
            self.phases.append(phase)
            if self.watch is not None:
                self.watch(start + offset)

    def current(self, now: float) -> Any:
        """The phase in force at `now`."""
        i = bisect_right(self.at, now) - 1
        return self.phases[max(i, 0)]

    def since(self, now: float) -> float:
        """When the current phase began."""
        i = max(bisect_right(self.at, now) - 1, 0)
        return self.at[i]

    def cut(self, now: float, steps: list[tuple[float, Any]]) -> None:
        """Forget what was scheduled after `now` and schedule `steps` from `now`."""
        i = bisect_right(self.at, now)
        del self.at[i:]
        del self.phases[i:]
        self.extend(now, steps)

    def shift(self, delta: float) -> None:
        """Move every scheduled time by `delta` seconds (a restored job on a new process's clock)."""
        self.at = [t + delta for t in self.at]

    def history(self, now: float) -> list[tuple[float, Any]]:
        """Phases reached so far with their monotonic times."""
        i = bisect_right(self.at, now)
        return list(zip(self.at[:i], self.phases[:i], strict=True))


class ChangeIndex:
    """When the jobs' scheduled phase changes fall (monotonic clock), so that "what changed since T" reads
    the jobs that changed instead of every job (a delta sync asks it every second; a vendor's database has
    an index for it). A superset: a change a later cut removed stays listed, so callers check each job."""

    def __init__(self) -> None:
        self._future: list[tuple[float, int, Any]] = []  # heap of changes still to come
        self._past: list[tuple[float, int, Any]] = []  # changes reached, in time order
        self._seq = itertools.count()  # ties never compare the jobs

    def add(self, job: Any, at: float) -> None:
        """A change of `job` scheduled at `at`."""
        heapq.heappush(self._future, (at, next(self._seq), job))

    def watch(self, job: Any, timeline: Timeline) -> None:
        """List the timeline's changes, and every one scheduled on it from now on."""
        for at in timeline.at:
            self.add(job, at)
        timeline.watch = lambda at: self.add(job, at)

    def _reach(self, now: float) -> None:
        while self._future and self._future[0][0] <= now:
            item = heapq.heappop(self._future)
            if self._past and item < self._past[-1]:
                insort(self._past, item)  # (a change scheduled in the past: rare)
            else:
                self._past.append(item)

    def since(self, at: float, now: float) -> list[Any]:
        """The jobs with a change in [at, now], each once, in no particular order."""
        self._reach(now)
        seen: dict[int, Any] = {}
        for _, _, job in self._past[bisect_left(self._past, (at, -1)):]:
            seen.setdefault(id(job), job)
        return list(seen.values())

    def next_due(self, now: float) -> float:
        """When the next change after `now` is scheduled (maybe earlier: a cut one), or inf."""
        self._reach(now)
        return self._future[0][0] if self._future else math.inf


def wall(mono: float) -> float:
    """Convert a monotonic timestamp to wall-clock epoch seconds."""
    return time.time() - (time.monotonic() - mono)


def per_attempt(env: dict[str, str], key: str, default: str) -> str:
    """A SIM_ setting for this attempt of a gateway job: `a,b,c` gives a to attempt 1 (TJG_ATTEMPT), b to 2, and
    c to 3 and later; a single value to every attempt."""
    values = [v.strip() for v in env.get(key, default).split(",")] or [default]
    try:
        attempt = max(1, int(env.get("TJG_ATTEMPT", "1")))
    except ValueError:
        attempt = 1
    return values[min(attempt, len(values)) - 1] or default


def exit_code_of(env: dict[str, str]) -> int:
    """SIM_EXIT_CODE of a failing job (default 1; per attempt, see per_attempt)."""
    try:
        return max(1, min(255, int(per_attempt(env, "SIM_EXIT_CODE", "1"))))
    except ValueError:
        return 1


OUTCOMES = ("completed", "failed", "abnormal", "preempted", "hang", "image-pull", "oom", "node-failure",
            "runtime-limit")
MISSING_IMAGE_TAGS = ("notfound", "does-not-exist")  # an image with such a tag cannot be pulled


def run_outcome(env: dict[str, str], image: str = "") -> tuple[str, float]:
    """SIM_OUTCOME (one of OUTCOMES; per attempt, see per_attempt) and SIM_RUN_SECONDS of a job's environment;
    an image tagged `:notfound` cannot be pulled whatever SIM_OUTCOME says."""
    outcome = per_attempt(env, "SIM_OUTCOME", "completed").lower()
    if outcome not in OUTCOMES:
        outcome = "completed"
    if image.rpartition(":")[2] in MISSING_IMAGE_TAGS:
        outcome = "image-pull"
    try:
        seconds = max(0.0, float(env.get("SIM_RUN_SECONDS", "5")))
    except ValueError:
        seconds = 5.0
    return outcome, seconds


class Persistent(Protocol):
    """A simulator whose jobs can be written down and taken up again."""

    revision: int

    def export_state(self) -> dict[str, Any]:
        """Everything about its jobs (picklable; times on this process's monotonic clock)."""

    def restore_state(self, state: dict[str, Any], shift: float) -> None:
        """Take jobs up again; `shift` moves the saved monotonic times onto this process's clock."""


STATE_VERSION = 1


class StateFile:
    """A simulator's jobs in a file beside the gateway's store, so that an in-process simulator goes on
    with its jobs when the gateway restarts (time spent down counts: a job due to end has ended).
    Written by this process only; a file it cannot read is set aside and the simulator starts empty."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self, sim: Persistent) -> int:
        """Restore `sim` from the file; returns the number of jobs taken up."""
        try:
            data = pickle.loads(self.path.read_bytes())
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            # A saved monotonic time m was at wall time m + (wall - mono); on this clock that wall time is
            # at m + (wall - mono) - (now_wall - now_mono).
            shift = (data["wall"] - data["mono"]) - (time.time() - time.monotonic())
            sim.restore_state(data["state"], shift)
        except FileNotFoundError:
            return 0
        except Exception as err:
            aside = self.path.with_suffix(self.path.suffix + ".unreadable")
            os.replace(self.path, aside)
            log.warning("simulator_state_unreadable", path=str(self.path), moved_to=str(aside), error=str(err))
            return 0
        return len(data["state"].get("order", []))

    def save(self, sim: Persistent) -> None:
        """Write the state atomically (a crash mid-write leaves the previous file)."""
        data = {"version": STATE_VERSION, "wall": time.time(), "mono": time.monotonic(),
                "state": sim.export_state()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, self.path)


def persist(app: web.Application, sim: Persistent, path: str | Path, every: float = 0.5) -> None:
    """Load `sim` from `path` when `app` starts, save it within `every` seconds of each change, and on
    cleanup."""
    state = StateFile(path)

    async def ctx(_: web.Application) -> Any:
        n = state.load(sim)
        if n:
            log.info("simulator_state_restored", path=str(state.path), jobs=n)
        saved = sim.revision

        async def saver() -> None:
            nonlocal saved
            while True:
                await asyncio.sleep(every)
                if sim.revision != saved:
                    saved = sim.revision
                    state.save(sim)

        task = asyncio.create_task(saver())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state.save(sim)

    app.cleanup_ctx.append(ctx)


# -- resource usage ----------------------------------------------------------------------------
USAGE_STEP_SECONDS = 1.0  # a simulated job's usage changes once a second


def running_spans(history: list[tuple[float, Any]], running: Callable[[Any], bool],
                  now: float) -> list[tuple[float, float]]:
    """The [start, end) monotonic intervals a job spent in a running phase, from its timeline history."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for t, phase in history:
        if running(phase):
            if start is None:
                start = t
        elif start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, now))
    return out


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) for the given parts (the same on every run and process)."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


@dataclass(frozen=True)
class Usage:
    """Deterministic, seeded resource usage of one simulated job while it runs. `SIM_GPU_UTIL` in the
    job's environment pins its mean GPU utilization (e.g. 3 for a job that holds GPUs and idles)."""

    key: str
    gpu_util: float

    @classmethod
    def of(cls, key: str, env: dict[str, str]) -> Usage:
        """The usage of job `key` with environment `env`."""
        raw = env.get("SIM_GPU_UTIL")
        try:
            mean = min(100.0, max(0.0, float(raw))) if raw is not None else 55 + 40 * _unit(key, "mean")
        except ValueError:
            mean = 55 + 40 * _unit(key, "mean")
        return cls(key, mean)

    def _noise(self, what: str, t_wall: float, unit: int) -> float:
        return _unit(self.key, what, unit, int(t_wall // USAGE_STEP_SECONDS)) - 0.5

    def gpu(self, t_wall: float, unit: int = 0) -> float:
        """GPU utilization in percent."""
        spread = 2.0 if self.gpu_util < 10 else 16.0
        return round(min(100.0, max(0.0, self.gpu_util + spread * self._noise("gpu", t_wall, unit))), 2)

    def gpu_memory(self, t_wall: float, unit: int = 0) -> float:
        """Fraction of a GPU's memory in use."""
        return round(min(0.97, max(0.02, 0.15 + 0.0075 * self.gpu_util + 0.06 * self._noise("gmem", t_wall, unit))), 4)

    def cpu(self, t_wall: float) -> float:
        """Fraction of the requested CPU in use."""
        return round(min(1.0, max(0.01, 0.2 + 0.004 * self.gpu_util + 0.2 * self._noise("cpu", t_wall, 0))), 4)

    def memory(self, t_wall: float) -> float:
        """Fraction of the requested memory in use."""
        return round(min(0.98, max(0.05, 0.3 + 0.004 * self.gpu_util + 0.08 * self._noise("mem", t_wall, 0))), 4)
