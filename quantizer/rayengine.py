"""The Ray engine of quantizer.scaleout: one actor per worker, shards streamed back as they finish.

What travels: the work object (small) and its payloads (the build as a tar archive, or the
pickled IRs and FP32 model) go into Ray's object store once (`ray.put`) and every actor
receives them in its constructor; every shard's images travel with the call that runs it.
Each payload carries its sha256, checked by the worker before use, and the worker checks that
its p2vit sources are the driver's (scaleout.code_fingerprint).

Ray is optional (`pip install -e '.[ray]'`): this module imports it only when called.
"""
from __future__ import annotations

import logging
import os
from collections import deque

from .errors import P2VitError
from .scaleout import CRASH_ENV, MAX_ATTEMPTS, RAY_INFLIGHT, _Runner, code_fingerprint, worker_info

_ACTOR = None


def import_ray():
    try:
        import ray
    except ImportError:
        raise P2VitError("--ray needs Ray, an optional extra: pip install -e '.[ray]' "
                         "(or run without --ray on this machine's cores)") from None
    return ray


def connect(address: str, workers: int | None = None) -> bool:
    """Join (or start, for 'local') a Ray cluster; True when this call started the connection
    (the caller shuts it down). A process already connected (ray.init before) keeps its cluster."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address not in ("local", "auto"):
        _probe(address)   # ray.init retries an unreachable address for minutes
    try:
        if address == "local":
            ray.init(address="local", num_cpus=workers, **kw)
        else:
            ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise P2VitError(f"cannot connect to the Ray cluster at {address} ({why}); start one with "
                         "'ray start --head' on its head node, or pass --ray local") from None
    return True


def _probe(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing listens on, in seconds (host:port or ray://host:port)."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise P2VitError(f"--ray {address}: not an address; give host:port (e.g. 10.0.0.5:6379), "
                         "ray://host:10001, 'auto' or 'local'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise P2VitError(f"cannot connect to the Ray cluster at {address} ({exc.strerror or exc}); start one "
                         "with 'ray start --head' on its head node, or pass --ray local") from None


def _actor_class(ray):
    global _ACTOR
    if _ACTOR is None:
        class ShardActor:
            """One worker: opens the work once in __init__ and keeps it."""

            def __init__(self, work, fingerprint, names, *blobs):
                self.error = None
                try:
                    if names:
                        work.attach(dict(zip(names, blobs)))
                    self.runner = _Runner(work, fingerprint, threads=1)
                except P2VitError as exc:
                    self.error = str(exc)

            def ready(self):
                return {**worker_info(), "error": self.error}

            def run(self, k, start, images, labels):
                try:
                    return self.runner.run(k, start, images, labels)
                except P2VitError as exc:
                    return k, {"error": str(exc)}, None

        _ACTOR = ray.remote(ShardActor)
    return _ACTOR


def run(work, images, labels, bounds, todo, engine, finished, bar, stats) -> None:
    ray = import_ray()
    from ray.exceptions import GetTimeoutError, RayActorError, RayError

    import time

    t_start = time.perf_counter()
    owned = connect(engine.address, engine.workers)
    actors: dict[int, dict] = {}   # slot -> {"actor", "info", "ready": bool}
    try:
        n_workers = engine.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        n_workers = min(n_workers, len(todo))
        shipped, blobs = work.shipped() if hasattr(work, "shipped") else (work, {})
        names = list(blobs)
        refs = [ray.put(blobs[k]) for k in names]
        fp = code_fingerprint()
        opts = {"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}
        env = {k: os.environ[k] for k in (CRASH_ENV, "P2VIT_BUILD_CACHE") if os.environ.get(k)}
        if env:   # the driver's settings reach the workers (tests: crash switch, private build cache)
            opts["runtime_env"] = {"env_vars": env}
        Actor = _actor_class(ray).options(**opts)
        queue = deque(todo)
        attempts = {k: 0 for k in todo}
        waiting: dict = {}             # ObjectRef -> ("ready", slot) | ("shard", slot, k)
        next_slot = 0

        def start_actor():
            nonlocal next_slot
            slot, next_slot = next_slot, next_slot + 1
            a = Actor.remote(shipped, fp, names, *refs)
            actors[slot] = {"actor": a, "info": None, "busy": set()}
            waiting[a.ready.remote()] = ("ready", slot)

        def feed(slot):
            rec = actors[slot]
            while queue and len(rec["busy"]) < RAY_INFLIGHT:
                k = queue.popleft()
                s, e = bounds[k]
                attempts[k] += 1
                rec["busy"].add(k)
                ref = rec["actor"].run.remote(k, s, images[s:e], None if labels is None else labels[s:e])
                waiting[ref] = ("shard", slot, k)

        def lose(slot, why):
            rec = actors.pop(slot, None)
            if rec is None:
                return
            lost = sorted(rec["busy"])
            for ref, what in list(waiting.items()):
                if what[1] == slot:
                    del waiting[ref]
            for k in lost:
                if attempts[k] >= MAX_ATTEMPTS:
                    raise P2VitError(f"shard {k} failed {attempts[k]} times (its worker died each time: {why}); "
                                     "check the Ray cluster's logs (ray logs)")
            queue.extendleft(reversed(lost))
            stats["retries"] += len(lost)
            info = rec["info"] or {}
            who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
            bar.say(f"  worker left: {who} ({why}); {len(lost)} shard(s) go back to the queue")
            try:
                ray.kill(rec["actor"], no_restart=True)
            except RayError:
                pass
            if queue or any(w[0] == "shard" for w in waiting.values()):
                start_actor()   # a replacement joins when the cluster has a CPU for it

        for _ in range(n_workers):
            start_actor()
        while queue or any(w[0] == "shard" for w in waiting.values()):
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=1.0)
            for ref in ready:
                what = waiting.pop(ref, None)
                if what is None:
                    continue
                slot = what[1]
                try:
                    out = ray.get(ref)
                except (RayActorError, RayError) as exc:
                    if isinstance(exc, GetTimeoutError):
                        raise
                    lose(slot, type(exc).__name__)
                    continue
                if what[0] == "ready":
                    if out.get("error"):
                        raise P2VitError(out["error"])
                    actors[slot]["info"] = out
                    stats.setdefault("seconds_to_first_worker", round(time.perf_counter() - t_start, 2))
                    stats["workers"] += 1
                    bar.say(f"  worker joined: pid {out['pid']} on {out['host']}")
                    feed(slot)
                else:
                    k, rows, secs = out
                    if isinstance(rows, dict):
                        raise P2VitError(rows["error"])
                    actors[slot]["busy"].discard(k)
                    finished(k, rows, secs)
            for slot, rec in list(actors.items()):   # also hands shards of a lost worker to idle ones
                if rec["info"] is not None:
                    feed(slot)
    finally:
        for rec in actors.values():
            try:
                ray.kill(rec["actor"], no_restart=True)
            except Exception:   # noqa: BLE001 - the cluster may be gone already
                pass
        if owned:
            ray.shutdown()
