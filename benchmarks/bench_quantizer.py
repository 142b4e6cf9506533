"""Measure vqstudy's quantizer and K-means against the libraries people use; write JSON.

Side by side in one run, repetitions interleaved so that a busy machine slows both
sides alike, medians reported. Torch runs on one thread, as every training run of the
study does (``vqstudy.training.torch_threads``), on both sides of each comparison:

- the quantizer's share of a C3 training step (the conv VQ-VAE of the
  ``cifar10_scaling`` quick profile) per codebook size K;
- one quantizer training step (search, straight-through output, commitment loss,
  backward, EMA update) vs ``vector_quantize_pytorch.VectorQuantize``, and its growth
  with K next to its bound (the distance product alone);
- the nearest-token search: the tiled two-stage argmin vs a plain chunked argmin (the
  one piece of speed machinery the quantizer keeps on CPU);
- peak resident memory of one step (each in a fresh process);
- Lloyd's K-means (one thread) vs scikit-learn's from the same initial centres, on its
  default threads (one per core) and on one, and the C3 notebook's K-means (k-means++
  seeding).

Never a test: timings on a shared machine say nothing pass/fail. Writes
``benchmarks/results/latest.json``; ``--book`` also writes the book's copy,
``book/performance_results.json``, which ``benchmarks/render_performance.py`` turns
into the Performance page's tables and figure.

    .venv/bin/python benchmarks/bench_quantizer.py [--reps 5] [--quick] [--book]
"""

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import interleaved  # noqa: E402  (benchmarks/timing.py)
from vqstudy import quantizer as Q  # noqa: E402
from vqstudy.cifar10 import normalize  # noqa: E402
from vqstudy.models import ConvAutoencoder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
BOOK_JSON = ROOT / "book" / "performance_results.json"

THREADS = 1             # torch threads of every quantizer measurement: the study's setting
D = 64                  # embedding dimension of the library comparison (the paper profile's latent)
N_STEP = 8192           # one batch of 128 images at 8x8 latents (the paper profile)
BETA = 0.25             # commitment weight
DECAY = 0.99
# the C3 quick profile (notebooks/profiles.yml, cifar10_scaling)
C3 = {"batch": 64, "latent_dim": 16, "width": 32, "lr": 0.002, "weight_decay": 1e-4,
      "codebook_sizes": [32, 128, 512, 2048, 8192], "kmeans_samples": 20000, "kmeans_iters": 10}


# ---------------------------------------------------------------- timing helpers (and benchmarks/timing.py)

@contextmanager
def torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- the quantizer's share of a C3 step

def c3_share(reps: int) -> list[dict]:
    """Per K: one C3 training step (encoder, quantizer, decoder, loss, backward, AdamW)
    next to the quantizer's part of it alone (forward with its EMA update, and backward
    from the gradients the decoder and the loss send it) and the same step without a
    quantizer (the decoder fed the encoder's output), interleaved. Random uint8 images,
    normalised as CIFAR-10 is: the time does not depend on what the pixels show."""
    rows = []
    g = torch.Generator().manual_seed(5)
    x = normalize(torch.randint(0, 256, (C3["batch"], 3, 32, 32), dtype=torch.uint8, generator=g))
    beta = torch.tensor(BETA)
    for k in C3["codebook_sizes"]:
        torch.manual_seed(0)
        model = ConvAutoencoder(C3["latent_dim"], C3["width"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=C3["lr"], weight_decay=C3["weight_decay"])
        vq = Q.VectorQuantizer(k, C3["latent_dim"], DECAY).train()
        with torch.no_grad():
            z0 = model.encode(x)
            flat = z0.reshape(-1, C3["latent_dim"])
            vq.codebook.copy_(flat[torch.randint(len(flat), (k,), generator=g)]
                              + 0.01 * torch.randn(k, C3["latent_dim"], generator=g))
        upstream = torch.randn(z0.shape, generator=g) / z0.numel()

        def step(quantize: bool = True) -> None:
            z = model.encode(x)
            if quantize:
                z_q, _, commitment = vq(z)
                loss = F.mse_loss(model.decode(z_q), x) + BETA * commitment
            else:
                loss = F.mse_loss(model.decode(z), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def quantizer_alone() -> None:
            leaf = z0.detach().requires_grad_()
            z_q, _, commitment = vq(leaf)
            torch.autograd.backward([z_q, commitment], [upstream, beta])

        t = interleaved({"step": step, "quantizer": quantizer_alone, "no_quantizer": lambda: step(False)}, reps)
        rows.append({"K": k, "N": z0.shape[:-1].numel(), "D": C3["latent_dim"], "step_ms": 1e3 * t["step"],
                     "quantizer_ms": 1e3 * t["quantizer"], "no_quantizer_ms": 1e3 * t["no_quantizer"],
                     "share": t["quantizer"] / t["step"]})
        r = rows[-1]
        print(f"  K={k:5d}  step {r['step_ms']:6.1f} ms   quantizer {r['quantizer_ms']:5.2f} ms "
              f"({100 * r['share']:4.1f} %)   step without quantizer {r['no_quantizer_ms']:6.1f} ms", flush=True)
    return rows


# ---------------------------------------------------------------- quantizer step vs the library

def ours_quantizer(k: int) -> torch.nn.Module:
    return Q.VectorQuantizer(k, D, decay=DECAY).train()


def library_quantizer(k: int) -> torch.nn.Module:
    from vector_quantize_pytorch import VectorQuantize

    return VectorQuantize(dim=D, codebook_size=k, decay=DECAY, commitment_weight=BETA,
                          rotation_trick=False, kmeans_init=False).train()


def step_fn(impl: str, vq: torch.nn.Module, z: torch.Tensor, upstream: torch.Tensor):
    """One training step of the quantizer alone: forward (the EMA update runs inside
    it in training mode, for both), then backward from the gradients a decoder and the
    loss would send: ``upstream`` for the quantized output, ``beta`` for the commitment
    loss (the library's loss comes already multiplied by its ``commitment_weight``)."""
    beta, one = torch.tensor(BETA), torch.tensor(1.0)

    def ours():
        leaf = z.detach().requires_grad_()
        z_q, _, commitment = vq(leaf)
        torch.autograd.backward([z_q, commitment], [upstream, beta])

    def library():
        leaf = z.detach().requires_grad_()
        z_q, _, loss = vq(leaf[None])
        torch.autograd.backward([z_q, loss], [upstream[None], one])

    return ours if impl == "ours" else library


def index_agreement(k: int, z: torch.Tensor) -> float:
    """Fraction of rows where both pick the same token from the same codebook (a
    check that the two compute the same thing; rounding may split near-ties)."""
    ours, lib = ours_quantizer(k).eval(), library_quantizer(k).eval()
    lib._codebook.embed.data.copy_(ours.codebook[None])
    with torch.no_grad():
        a = ours(z)[1]
        b = lib(z[None])[1][0]
    return (a == b).float().mean().item()


def product_alone(z: torch.Tensor, k: int):
    """The step's distance product and nothing else, (N x D) times (D x K), in the
    search's own tile shape into one buffer: the bound no search can beat."""
    codebook = torch.randn(k, D)
    rows, tokens = Q.tile_shape(z.shape[0], k, Q.MAX_CHUNK_ELEMENTS, Q.GROUP)
    out = torch.empty(rows * tokens)

    def run() -> None:
        for r0 in range(0, z.shape[0], rows):
            block = z[r0:r0 + rows]
            for c0 in range(0, k, tokens):
                part = codebook[c0:c0 + tokens]
                torch.mm(block, part.t(), out=out[:block.shape[0] * part.shape[0]].view(-1, part.shape[0]))
    return run


def quantizer_vs_library(ks: list[int], library_ks: list[int], reps: int) -> list[dict]:
    """Per K: our step, the library's (at ``library_ks`` only: it takes seconds at large
    K) and the bound, interleaved."""
    rows = []
    g = torch.Generator().manual_seed(0)
    z, upstream = torch.randn(N_STEP, D, generator=g), torch.randn(N_STEP, D, generator=g)
    for k in ks:
        fns = {"ours": step_fn("ours", ours_quantizer(k), z, upstream), "bound": product_alone(z, k)}
        if k in library_ks:
            fns["library"] = step_fn("library", library_quantizer(k), z, upstream)
        t = interleaved(fns, reps)
        row = {"K": k, "N": N_STEP, "D": D, "ours_ms": 1e3 * t["ours"], "bound_ms": 1e3 * t["bound"],
               "bound_gflops": 2 * N_STEP * k * D / t["bound"] / 1e9}
        line = f"  K={k:6d}  ours {row['ours_ms']:8.1f} ms   bound {row['bound_ms']:8.1f} ms"
        if "library" in t:
            row.update(library_ms=1e3 * t["library"], speedup=t["library"] / t["ours"],
                       same_tokens=index_agreement(k, z))
            line += (f"   library {row['library_ms']:8.1f} ms   {row['speedup']:5.1f}x   "
                     f"same tokens {row['same_tokens']:.4f}")
        rows.append(row)
        print(line, flush=True)
    return rows


def search_paths(cases: list[tuple[int, int, int]], reps: int) -> list[dict]:
    """The tiled two-stage argmin vs a plain argmin over row chunks of all K distances
    (2 MB chunks, as the tiles), each checked to pick the same tokens."""
    rows = []
    g = torch.Generator().manual_seed(1)
    for n, k, d in cases:
        z, codebook = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
        assert torch.equal(Q.nearest_token_grouped(z, codebook), Q.nearest_token_plain(z, codebook))
        t = interleaved({"tiled": lambda: Q.nearest_token_grouped(z, codebook),
                         "plain": lambda: Q.nearest_token_plain(z, codebook)}, reps)
        rows.append({"N": n, "K": k, "D": d, "tiled_ms": 1e3 * t["tiled"], "plain_ms": 1e3 * t["plain"],
                     "speedup": t["plain"] / t["tiled"], "path": "tiled" if Q.tiled(n, k) else "plain"})
        r = rows[-1]
        print(f"  N={n:5d} K={k:6d} D={d:3d}  tiled {r['tiled_ms']:7.2f} ms   plain {r['plain_ms']:7.2f} ms   "
              f"{r['speedup']:4.2f}x   (nearest_token takes the {r['path']} path)", flush=True)
    return rows


def subnormal_search(steps: int, reps: int, k: int = 8192, d: int = 16, n: int = 4096, in_use: int = 1500) -> dict:
    """Issue 27: the nearest-token search after ``steps`` EMA updates in which only
    at most ``in_use`` of ``k`` tokens are ever chosen (the rest decay by 0.99 a step), with the
    quantizer as it is ("after": statistics below the smallest normal float flushed to
    zero) and with the flush switched off ("before": the update as it was), next to a
    fresh codebook; C3's largest K and latent dimension, one C3 batch of rows."""
    g = torch.Generator().manual_seed(4)
    fresh = Q.VectorQuantizer(k, d, decay=DECAY)
    fresh.set_codebook(torch.randn(k, d, generator=g), vectors_per_batch=n)
    rows = torch.randn(n, d, generator=g)
    idx = torch.randint(in_use, (n,), generator=g)
    in_use = int(idx.unique().numel())  # the same rows every step: tokens not drawn here are never chosen

    def decayed(flush: bool) -> torch.Tensor:
        vq = copy.deepcopy(fresh)
        original = Q.flush_subnormal_
        Q.flush_subnormal_ = original if flush else (lambda x: x)
        try:
            for _ in range(steps):
                vq.ema_update(rows, idx)
        finally:
            Q.flush_subnormal_ = original
        return vq.codebook.clone()

    codebooks = {"fresh": fresh.codebook.clone(), "before": decayed(False), "after": decayed(True)}
    z = torch.randn(n, d, generator=g)
    t = interleaved({name: (lambda c=c: Q.nearest_token(z, c)) for name, c in codebooks.items()}, reps)
    tiny = torch.finfo(torch.float32).tiny
    row = {"K": k, "D": d, "N": n, "steps": steps, "tokens_in_use": in_use,
           **{f"{name}_ms": 1e3 * t[name] for name in codebooks},
           **{f"{name}_subnormal_tokens": int(((c != 0) & (c.abs() < tiny)).any(1).sum())
              for name, c in codebooks.items()},
           "before_vs_fresh": t["before"] / t["fresh"], "after_vs_fresh": t["after"] / t["fresh"]}
    print(f"  after {steps} EMA steps, {k - in_use} of {k} tokens never chosen: fresh {row['fresh_ms']:.1f} ms, "
          f"before the fix {row['before_ms']:.1f} ms ({row['before_subnormal_tokens']} tokens subnormal), "
          f"after {row['after_ms']:.1f} ms ({row['after_subnormal_tokens']}): after / fresh "
          f"{row['after_vs_fresh']:.2f}x", flush=True)
    return row


# ---------------------------------------------------------------- memory

def resident_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB. Not ``ru_maxrss``: on
    Linux it survives ``exec`` and would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(impl: str, k: int) -> None:
    """In a fresh process: peak resident memory of one training step (printed as JSON)."""
    torch.set_num_threads(THREADS)
    g = torch.Generator().manual_seed(0)
    z, upstream = torch.randn(N_STEP, D, generator=g), torch.randn(N_STEP, D, generator=g)
    vq = ours_quantizer(k) if impl == "ours" else library_quantizer(k)
    before = resident_mb("VmRSS")
    step_fn(impl, vq, z, upstream)()
    peak = resident_mb("VmHWM")
    print(json.dumps({"impl": impl, "K": k, "N": N_STEP, "rss_before_mb": before, "peak_rss_mb": peak}))


def memory(cases: list[tuple[str, int]]) -> list[dict]:
    rows = []
    for impl, k in cases:
        out = subprocess.run([sys.executable, __file__, "--memory-child", impl, str(k)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {impl:8s} K={k:6d}  peak RSS {rows[-1]['peak_rss_mb']:7.0f} MB "
              f"(before the step {rows[-1]['rss_before_mb']:.0f} MB)", flush=True)
    return rows


# ---------------------------------------------------------------- K-means

def inertia(x: torch.Tensor, centres: torch.Tensor) -> float:
    """Sum of squared distances to the nearest centre, by one function for both sides."""
    return Q.distance_to_nearest(x, centres).double().sum().item()


def kmeans_vs_sklearn(n: int, k: int, iters: int, reps: int, cores: int) -> dict:
    """Ours on one torch thread, as in a training run; scikit-learn's Lloyd on its default
    OpenMP threads (one per core) and on one thread, all three interleaved.

    Not ours on torch's own intra-op threads: on the shared machine they measured more
    than ten times slower than one thread (every small operation of the search ends in a
    barrier that waits for a descheduled thread). In one process ``torch.set_num_threads``
    also sets the OpenMP thread count scikit-learn reads, so each call sets it and the
    count scikit-learn saw is recorded."""
    from sklearn.cluster import KMeans
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, D, generator=g)
    init = x[torch.randperm(n, generator=g)[:k]].clone()
    x_np, init_np = x.numpy(), init.numpy()
    fitted = {}

    def ours():
        with torch_threads(1):
            fitted["ours"] = Q.kmeans(x, k, iters=iters, init=init)[0]

    def sklearn(threads: int):
        def fit():
            with torch_threads(threads):
                fitted[f"sklearn_{threads}_threads"] = _openmp_effective_n_threads()
                km = KMeans(n_clusters=k, init=init_np, n_init=1, max_iter=iters, tol=0.0,
                            algorithm="lloyd").fit(x_np)
            fitted[f"sklearn_{threads}"], fitted["sklearn_iters"] = torch.from_numpy(km.cluster_centers_), km.n_iter_
        return fit

    t = interleaved({"ours": ours, "sklearn": sklearn(cores), "sklearn_1": sklearn(1)}, reps)
    row = {"N": n, "K": k, "D": D, "iters": iters, "reps": reps, "threads": 1,
           "sklearn_threads": fitted[f"sklearn_{cores}_threads"], "sklearn_1_threads": fitted["sklearn_1_threads"],
           "sklearn_iters": int(fitted["sklearn_iters"]), "ours_s": t["ours"], "sklearn_s": t["sklearn"],
           "sklearn_1_s": t["sklearn_1"], "speedup": t["sklearn"] / t["ours"], "speedup_1": t["sklearn_1"] / t["ours"],
           "inertia_ours": inertia(x, fitted["ours"]), "inertia_sklearn": inertia(x, fitted[f"sklearn_{cores}"])}
    row["inertia_ratio"] = row["inertia_ours"] / row["inertia_sklearn"]
    print(f"  ours (1 thread) {row['ours_s']:.2f} s   scikit-learn ({row['sklearn_threads']} threads) "
          f"{row['sklearn_s']:.2f} s: {row['speedup']:.2f}x   scikit-learn (1 thread) {row['sklearn_1_s']:.2f} s: "
          f"{row['speedup_1']:.2f}x   inertia ratio {row['inertia_ratio']:.5f} "
          f"(scikit-learn ran {row['sklearn_iters']} iterations)", flush=True)
    return row


def kmeans_c3(reps: int) -> dict:
    """The C3 notebook's codebook K-means at its largest K: k-means++ seeding and Lloyd
    on ``kmeans_samples`` encoder outputs, on one thread as in a training run."""
    n, k, d, iters = C3["kmeans_samples"], max(C3["codebook_sizes"]), C3["latent_dim"], C3["kmeans_iters"]
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(3))
    t = interleaved({"seeding": lambda: Q.kmeans(x, k, iters=0), "total": lambda: Q.kmeans(x, k, iters=iters)}, reps)
    print(f"  kmeans(x ({n} x {d}), {k}, iters={iters}): {t['total']:.2f} s, "
          f"of which k-means++ (+1 pass) {t['seeding']:.2f} s", flush=True)
    return {"N": n, "K": k, "D": d, "iters": iters, "total_s": t["total"], "seeding_s": t["seeding"]}


# ---------------------------------------------------------------- run and save

def machine() -> dict:
    import sklearn
    from importlib.metadata import version

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": commit,
            "cpu": cpu, "cores": os.cpu_count(), "torch_threads": THREADS,
            "python": platform.python_version(), "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "vector-quantize-pytorch": version("vector-quantize-pytorch")}


def run(reps: int, quick: bool) -> dict:
    torch.set_num_threads(THREADS)
    cores = os.cpu_count()
    out = {"run": {**machine(), "reps": reps, "quick": quick, "load_average_start": load_average()}}
    print(f"== {out['run']['cpu']}, {cores} cores, torch on {THREADS} thread, "
          f"load average {out['run']['load_average_start']}")
    print("== the quantizer's share of a C3 training step (conv VQ-VAE, batch 64, D = 16)")
    out["c3_share"] = c3_share(max(reps, 21))
    print(f"== quantizer step vs vector_quantize_pytorch.VectorQuantize and the bound (N = {N_STEP}, D = {D})")
    library_ks = [512, 4096] if quick else [512, 4096, 16384]
    ks = library_ks if quick else [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    out["quantizer_vs_library"] = quantizer_vs_library(ks, library_ks, reps)
    print("== nearest-token search: tiled two-stage argmin vs plain chunked argmin")
    cases = [(4096, k, C3["latent_dim"]) for k in C3["codebook_sizes"]] + [(N_STEP, 512, D), (N_STEP, 16384, D)]
    out["search_paths"] = search_paths(cases, max(reps, 11))
    print("== nearest-token search after 12000 EMA steps with dead tokens (subnormal statistics, issue 27)")
    out["subnormal_search"] = subnormal_search(2000 if quick else 12000, max(reps, 11))
    print("== peak resident memory of one step (fresh process each)")
    out["memory"] = memory([("ours", 16384), ("library", 16384)] if quick else
                           [("ours", 16384), ("ours", 65536), ("library", 16384)])
    print("== K-means vs scikit-learn KMeans(n_init=1, algorithm='lloyd'), same initial centres")
    out["kmeans_vs_sklearn"] = (kmeans_vs_sklearn(10000, 1024, 20, reps, cores) if quick else
                                kmeans_vs_sklearn(20000, 2048, 20, reps, cores))
    print("== the C3 notebook's K-means (k-means++ seeding, one thread)")
    out["kmeans_c3"] = kmeans_c3(3)
    out["run"]["load_average_end"] = load_average()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions per measurement (median reported)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, to check the script itself")
    p.add_argument("--book", action="store_true", help=f"also write {BOOK_JSON.relative_to(ROOT)}")
    p.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    p.add_argument("--only", choices=["subnormal_search"], default=None,
                   help="measure only this section and update it in the existing results (its own run line)")
    p.add_argument("--memory-child", nargs=2, metavar=("IMPL", "K"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    if args.only:
        torch.set_num_threads(THREADS)
        res = json.loads((BOOK_JSON if args.book else args.json).read_text())
        res[args.only] = {**subnormal_search(2000 if args.quick else 12000, max(args.reps, 11)),
                          "run": {**machine(), "load_average": load_average()}}
    else:
        res = run(args.reps, args.quick)
    text = json.dumps(res, indent=1) + "\n"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text)
    print(f"== wrote {args.json}")
    if args.book:
        BOOK_JSON.write_text(text)
        print(f"== wrote {BOOK_JSON.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
