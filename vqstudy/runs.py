"""The run cache and the sweep: every training run stored under a key derived from its
full config and the code that computes it.

A run is written atomically (:func:`vqstudy.files.atomic_write`), so a run killed half-way
leaves no file a later run could mistake for a result, and two processes that compute the
same run leave one file. Each file carries the SHA-256 of its contents: a file that is
truncated, altered or stored for another config is reported, deleted and recomputed,
never used.

:func:`run_all` maps configs to results: in worker processes on this machine (one torch
thread each, as many as there are cores), in this process (``workers=1``), or on a Dask
cluster (``scheduler``). Each result lands in the run cache as soon as it is computed, so
an interrupted sweep loses only the runs that had not finished, and a notebook executed
after the sweep only reads. Runs that differ only in K share their pretraining through
the cache (:class:`PretrainedStore`): the first run of such a group trains it, the others
start once it is stored.
"""

import ast
import dataclasses
import functools
import hashlib
import io
import json
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch
from tqdm import tqdm

from vqstudy.files import atomic_write
from vqstudy.training import Config, pretrain_key, train

# First line of every run file: format tag, then the SHA-256 of the torch.save payload after it.
MAGIC = b"vqstudy-run-v2"
PACKAGE = Path(__file__).resolve().parent
ENTRY_POINT = "training"  # the module whose code, with everything it imports from vqstudy, computes a run


def imported_modules(name: str, seen: set | None = None) -> set:
    """``name`` and every vqstudy module it imports, directly or not (read from the
    source, imports inside functions included)."""
    seen = set() if seen is None else seen
    if name in seen or not (PACKAGE / f"{name}.py").exists():
        return seen
    seen.add(name)
    for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
        found = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "vqstudy":
                found = [alias.name for alias in node.names]
            elif node.module.startswith("vqstudy."):
                found = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            found = [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("vqstudy.")]
        for module in found:
            imported_modules(module, seen)
    return seen


@functools.cache
def code_version() -> str:
    """A hash of all code that computes a run: ``training.py`` and every vqstudy module
    it imports, found by reading the imports (a module added later is covered as soon as
    the training code imports it); prose, figures and notebooks are not part of it.
    Read once per process: the code a process runs is the code it imported."""
    h = hashlib.sha256()
    for name in sorted(imported_modules(ENTRY_POINT)):
        h.update(name.encode() + (PACKAGE / f"{name}.py").read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """``$VQSTUDY_RUNS``, or ``runs/`` in the current checkout."""
    return Path(os.environ.get("VQSTUDY_RUNS", PACKAGE.parent / "runs"))


def run_key(cfg: Config, version: str | None = None) -> str:
    payload = json.dumps({"config": dataclasses.asdict(cfg), "code": version or code_version()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def run_path(cfg: Config, version: str | None = None) -> Path:
    return cache_dir() / f"{run_key(cfg, version)}.pt"


class SweepFailed(RuntimeError):
    """Some runs of a sweep raised. The others finished and are in the run cache;
    ``failures`` holds ``(config, exception)`` for each failed one."""

    def __init__(self, failures: list, n_runs: int):
        self.failures = failures
        lines = [f"  {describe(cfg)}: {type(exc).__name__}: {str(exc)[:300]}" for cfg, exc in failures]
        super().__init__(f"{len(failures)} of {n_runs} runs failed (the other runs are stored in the run cache):\n"
                         + "\n".join(lines))


def describe(cfg: Config) -> str:
    """A short name for a run in messages: the fields sweeps vary, and its cache key."""
    return (f"regime={cfg.regime} codebook_size={cfg.codebook_size} hidden={cfg.hidden} seed={cfg.seed} "
            f"lr={cfg.lr} (run {run_key(cfg)})")


def read_blob(path: Path):
    """The object stored at ``path`` after checking its header and checksum; raises
    ``ValueError`` saying what is wrong, ``FileNotFoundError`` when there is none.

    The checksum only catches accidents: anyone who can write to the run cache can
    compute it. What makes reading a shared cache safe is that the payload is read as
    data: ``torch.load(weights_only=True)`` unpickles tensors, numbers, strings, lists,
    tuples and dicts only, and refuses anything else (an object whose unpickling would
    run code) with an error, so such a file is treated as corrupt."""
    blob = path.read_bytes()
    header, _, payload = blob.partition(b"\n")
    tag, _, digest = header.partition(b" ")
    if tag != MAGIC:
        raise ValueError("no run-file header (truncated, or written by an older vqstudy)")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch (truncated or altered)")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError: something other than plain data
        raise ValueError(f"holds something other than plain data, refused unread ({str(exc).splitlines()[0]})")


def write_blob(obj, path: Path) -> None:
    """Store ``obj`` at ``path`` atomically, behind its header and checksum."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    header = MAGIC + b" " + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    atomic_write(path, lambda f: f.write(header + payload))


def load_run(path: Path, cfg: Config | None = None) -> dict | None:
    """The stored result, or ``None`` when there is none or it is corrupt (then deleted).

    Corrupt means: no format tag, a checksum that does not match the bytes (truncated or
    altered), not a result, or -- when ``cfg`` is given -- the result of another config."""
    try:
        result = read_blob(path)
        if not isinstance(result, dict) or "metrics" not in result:
            raise ValueError("not a run result")
        if cfg is not None and result.get("config") != dataclasses.asdict(cfg):
            raise ValueError("stored for another config")
        return result
    except FileNotFoundError:
        return None
    except Exception as exc:  # never use it: warn, delete, let the caller recompute
        warnings.warn(f"run cache file {path} is corrupt ({exc.__class__.__name__}: {exc}); recomputing it")
        path.unlink(missing_ok=True)
        return None


def save_run(result: dict, path: Path) -> None:
    """Write ``result`` to ``path`` atomically: readers see the old file or the whole new one."""
    write_blob(result, path)


class PretrainedStore:
    """Pretrainings kept in the run cache (``pretrained/``), so that runs differing only
    in K, in any process, train the autoencoder once. Same checks as a run file; a
    corrupt one is recomputed."""

    def __init__(self, version: str | None = None):
        self.version = version or code_version()

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(f"{key} {self.version}".encode()).hexdigest()[:24]
        return cache_dir() / "pretrained" / f"{digest}.pt"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            return read_blob(path)
        except FileNotFoundError:
            return None
        except Exception as exc:
            warnings.warn(f"pretraining file {path} is corrupt ({exc}); recomputing it")
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, state: dict) -> None:
        write_blob(state, self.path(key))


def clear(directory: Path | None = None) -> int:
    """Delete every stored run and pretraining (and temporary files of interrupted
    writes); return how many files."""
    directory = Path(directory) if directory else cache_dir()
    files = [p for pattern in ("*.pt", "*.tmp", ".*.tmp", "pretrained/*.pt", "pretrained/.*.tmp")
             for p in directory.glob(pattern)] if directory.is_dir() else []
    for f in set(files):
        f.unlink(missing_ok=True)
    return len(set(files))


def cached_train(cfg: Config, use_cache: bool = True, progress: bool = False) -> dict:
    """``train(cfg)``, or its stored result when the same config and code ran before."""
    path = run_path(cfg)
    if use_cache and (result := load_run(path, cfg)) is not None:
        return result
    result = train(cfg, progress=progress, pretrained=PretrainedStore() if use_cache else None)
    if use_cache:
        save_run(result, path)
    return result


def default_workers() -> int:
    """``$VQSTUDY_WORKERS``, else one worker process per core."""
    value = os.environ.get("VQSTUDY_WORKERS", str(os.cpu_count() or 1))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"VQSTUDY_WORKERS={value!r} is invalid: must be a positive integer")
    return int(value)


def run_all(configs: list[Config], use_cache: bool = True, progress: bool = True, desc: str = "runs",
            workers: int | None = None, scheduler=None) -> list[dict]:
    """Results of every config, in order, each from the cache or trained now.

    Missing runs train in ``workers`` processes on this machine (default
    :func:`default_workers`; 1: in this process, one after the other, with a bar per
    run's steps), or on a Dask cluster when ``scheduler`` is a scheduler address
    (``tcp://host:8786``) or a ``distributed.Client``. A run that raises does not stop
    the others: they finish and are stored, then :class:`SweepFailed` names each failed
    config and its error. Ctrl-C stops at once; what finished is stored."""
    configs = list(configs)
    results = [load_run(run_path(cfg), cfg) if use_cache else None for cfg in configs]
    todo = {}  # key -> index of the first config with that key: a config listed twice trains once
    for i, (cfg, result) in enumerate(zip(configs, results)):
        if result is None:
            todo.setdefault(run_key(cfg), i)
    if todo:
        bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc=desc, disable=not progress,
                   file=sys.stderr, unit="run")
        bar.swept = swept_fields(configs)  # each finished run is named by these
        try:
            workers = default_workers() if workers is None else workers
            if scheduler is not None and scheduler != "":
                run = _run_on_dask
            else:
                run = _run_here if workers <= 1 or len(todo) == 1 else _run_in_processes
            done, failures = run([configs[i] for i in todo.values()], use_cache, progress, bar, workers, scheduler)
        finally:
            bar.close()
        for i, result in enumerate(results):
            if result is None:
                results[i] = done.get(run_key(configs[i]))
        if failures:
            raise SweepFailed(failures, len(configs))
    return results


def swept_fields(configs: list[Config]) -> tuple[str, ...]:
    """The Config fields in which ``configs`` differ, in Config's order: what tells the
    runs of a sweep apart (a sweep over beta: ``("beta",)``)."""
    values = [dataclasses.asdict(cfg) for cfg in configs]
    return tuple(f.name for f in dataclasses.fields(Config) if len({repr(v[f.name]) for v in values}) > 1)


def run_label(cfg: Config, fields: tuple[str, ...]) -> str:
    """``beta=0.5 seed=1``: the run among its sweep's, by the fields in which they differ
    (its seed when they differ in none)."""
    return " ".join(f"{name}={getattr(cfg, name)}" for name in fields or ("seed",))


def _finished(bar, cfg: Config) -> None:
    """One more run done: the bar's postfix names it by every swept field
    (``bar.swept``, set by :func:`run_all`)."""
    bar.update(1)
    bar.set_postfix_str(f"done {run_label(cfg, getattr(bar, 'swept', ()))}", refresh=True)


def _run_here(configs, use_cache, progress, bar, workers, scheduler):
    done, failures = {}, []
    for cfg in configs:
        try:
            done[run_key(cfg)] = cached_train(cfg, use_cache=use_cache, progress=progress)
        except Exception as exc:  # not KeyboardInterrupt: an interrupt stops the sweep
            failures.append((cfg, exc))
        _finished(bar, cfg)
    return done, failures


def sharing_order(configs: list[Config]) -> tuple[list[Config], dict]:
    """Runs that can start at once, and for each of them the runs that wait for it: the
    pretrain-regime runs that share its pretraining (same :func:`pretrain_key`)."""
    first, followers = {}, {}
    ready = []
    for cfg in configs:
        if cfg.regime != "pretrain":
            ready.append(cfg)
            continue
        key = pretrain_key(cfg)
        if key in first:
            followers[first[key]].append(cfg)
        else:
            first[key] = run_key(cfg)
            followers[run_key(cfg)] = []
            ready.append(cfg)
    ready.sort(key=lambda c: c.regime != "pretrain")  # the runs others wait for go first
    return ready, followers


def _worker_started() -> None:
    """Worker processes leave Ctrl-C to the parent, which stops them; and a worker whose
    parent is gone (killed: no chance to stop it) exits instead of training on for no one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def exit_when_orphaned():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


def _run_in_processes(configs, use_cache, progress, bar, workers, scheduler):
    """``workers`` processes (spawned: a fresh interpreter each, nothing inherited
    from a notebook kernel), each training one run at a time on one torch thread."""
    import multiprocessing

    ready, followers = sharing_order(configs)
    done, failures = {}, []
    pool = ProcessPoolExecutor(max_workers=min(workers, len(configs)),
                               mp_context=multiprocessing.get_context("spawn"), initializer=_worker_started)
    try:
        running = {pool.submit(cached_train, cfg, use_cache): cfg for cfg in ready}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cfg = running.pop(future)
                try:
                    done[run_key(cfg)] = future.result()
                except Exception as exc:
                    failures.append((cfg, exc))
                _finished(bar, cfg)
                for waiting in followers.get(run_key(cfg), []):
                    running[pool.submit(cached_train, waiting, use_cache)] = waiting
    except BaseException:
        for process in list(pool._processes.values()):  # stop runs in flight now, not when they end
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return done, failures


def _run_on_dask(configs, use_cache, progress, bar, workers, scheduler):
    """Submit every run, then collect results as they finish. Workers store what they
    compute; the client stores any result it cannot see in the cache (a worker without
    the shared filesystem)."""
    from distributed import Client, as_completed

    done, failures = {}, []
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler, set_as_default=False)
    try:
        version = code_version()
        futures = {client.submit(run_on_worker, cfg, str(run_path(cfg)), str(cache_dir()), version, use_cache,
                                 key=f"vqstudy-run-{run_key(cfg)}"): cfg for cfg in configs}
        for future in as_completed(futures, loop=client.loop):  # loop: the client need not be the default one
            cfg = futures[future]
            if future.status != "finished":  # the run raised, its workers kept dying, or it was cancelled
                failures.append((cfg, _exception_of(future)))
            else:
                result = future.result()
                path = run_path(cfg)
                if use_cache and not path.exists():
                    save_run(result, path)
                done[run_key(cfg)] = result
                future.release()  # stored: the cluster need not keep it in memory
            _finished(bar, cfg)
    finally:
        if client is not scheduler:
            client.close()
    return done, failures


def _exception_of(future) -> BaseException:
    try:
        return future.exception()
    except BaseException as exc:  # a cancelled future raises instead of returning its exception
        return exc


def keep_freed_memory() -> None:
    """Have glibc keep up to 64 MiB of freed memory for reuse instead of handing it back.

    Applied on Dask workers only, where it was measured to matter: the nanny sets
    ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold at 128 KiB,
    so every step's temporaries were page-faulted in again (a CIFAR-10 run took 42 s
    instead of 16 s). A no-op where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: glibc's maximum; larger blocks are mmap-ed
        libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD: give memory back above 64 MiB free
    except (OSError, AttributeError):
        pass


def run_on_worker(cfg: Config, path: str, cache: str, version: str, use_cache: bool) -> dict:
    """What a Dask worker runs: the cached result or ``train(cfg)``, stored at ``path`` (the
    client's run cache; a shared filesystem makes it the same file everywhere).

    A worker whose vqstudy differs from the client's would store results under a key they
    do not belong to, so it refuses. A failed write is left to the client to redo."""
    if code_version() != version:
        raise RuntimeError(f"worker's vqstudy code version {code_version()} differs from the client's {version}: "
                           "install the same vqstudy on every worker")
    keep_freed_memory()
    os.environ["VQSTUDY_RUNS"] = cache  # the client's run cache, pretrainings included
    path = Path(path)
    if use_cache and (result := load_run(path, cfg)) is not None:
        return result
    result = train(cfg, pretrained=PretrainedStore(version) if use_cache else None)
    if use_cache:
        try:
            save_run(result, path)
        except OSError as exc:
            warnings.warn(f"worker could not store {path} ({exc}); the client will")
    return result
