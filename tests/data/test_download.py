"""CIFAR-10 downloads are checked against the official MD5s; a mismatch is a clear error and
leaves nothing behind that a later run could mistake for the dataset. No network is used."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from alexnet.data import CIFAR10DataModule, DataError
from alexnet.data import download as dl
from alexnet.data.augment.presets import PlainAug

OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"  # cifar-10-python.tar.gz, as torchvision has it


def test_expected_checksums_are_the_official_ones():
    url, name, md5, base, batches = dl._official()
    assert (name, md5, base) == ("cifar-10-python.tar.gz", OFFICIAL_MD5, "cifar-10-batches-py")
    assert url.startswith("https://www.cs.toronto.edu/")
    assert set(batches) == {
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
        "batches.meta",
    }


class Served:
    """Stands in for urlopen: serves `payload` (bytes) or raises it (an exception)."""

    def __init__(self, payload):
        self.payload, self.calls = payload, []

    def __call__(self, url, timeout):
        self.calls.append((url, timeout))
        if isinstance(self.payload, BaseException):
            raise self.payload
        return io.BytesIO(self.payload)


def test_corrupt_download_is_refused_and_removed(tmp_path, monkeypatch):
    served = Served(b"<html>captive portal</html>")
    monkeypatch.setattr(dl, "urlopen", served)
    with pytest.raises(
        DataError,
        match=f"has MD5 [0-9a-f]{{32}}, expected {OFFICIAL_MD5}: it is "
        "corrupt or not the official file; nothing was kept",
    ):
        dl.download_cifar10(tmp_path)
    assert served.calls and served.calls[0][1] == 30.0  # never waits without a timeout
    assert list(tmp_path.iterdir()) == []


def test_corrupt_archive_already_in_place_is_refused(tmp_path, monkeypatch):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"half a download")
    monkeypatch.setattr(dl, "urlopen", Served(AssertionError("must not download")))
    with pytest.raises(
        DataError,
        match=r"cifar-10-python.tar.gz has MD5 .* expected "
        rf"{OFFICIAL_MD5}: .*delete it and run again",
    ):
        dl.download_cifar10(tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_offline_download_fails_fast_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "urlopen", Served(OSError("Network is unreachable")))
    dm = CIFAR10DataModule(root=tmp_path, download=True)
    with pytest.raises(
        dl.DownloadFailed,
        match=r"could not download .*Network is unreachable.*; "
        r"run with data.download=true when online",
    ):
        dm.prepare_data()


def fake_cifar(tamper: str | None = None, escape: bool = False) -> tuple[bytes, dict[str, str]]:
    """A cifar-10-python.tar.gz look-alike and the MD5s of its true batch files."""
    files, md5s = {}, {}
    rng = np.random.default_rng(0)
    for name in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ):
        batch = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        files[name] = pickle.dumps(batch)
    files["batches.meta"] = pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
    for name, data in files.items():
        md5s[name] = hashlib.md5(data).hexdigest()
    if tamper:
        files[tamper] = files[tamper][:-1] + b"!"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if escape:
            info = tarfile.TarInfo("../escaped.txt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    return buf.getvalue(), md5s


def official_like(monkeypatch, archive: bytes, md5s: dict[str, str]) -> None:
    """Make the fake archive and batches the 'official' ones for this test."""
    url, name, _, base, _ = dl._official()
    monkeypatch.setattr(
        dl, "_official", lambda: (url, name, hashlib.md5(archive).hexdigest(), base, md5s)
    )
    monkeypatch.setattr(dl, "urlopen", Served(archive))


def test_verified_download_unpacks_the_batches(tmp_path, monkeypatch):
    archive, md5s = fake_cifar()
    official_like(monkeypatch, archive, md5s)
    batches = dl.download_cifar10(tmp_path)
    assert sorted(p.name for p in batches.iterdir()) == sorted(md5s)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tampered_batch_inside_a_matching_archive_is_refused(tmp_path, monkeypatch):
    archive, md5s = fake_cifar(tamper="data_batch_3")
    official_like(monkeypatch, archive, md5s)
    with pytest.raises(DataError, match=r"data_batch_3 has MD5 .*the CIFAR-10 batches are corrupt"):
        dl.download_cifar10(tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing half-unpacked stays


def test_archive_escaping_its_folder_is_refused(tmp_path, monkeypatch):
    archive, md5s = fake_cifar(escape=True)
    official_like(monkeypatch, archive, md5s)
    with pytest.raises(DataError, match="cannot be unpacked safely"):
        dl.download_cifar10(tmp_path / "cifar10")
    assert not (tmp_path / "escaped.txt").exists()


def test_corrupt_batches_on_disk_are_named_before_anything_is_unpickled(tmp_path, monkeypatch):
    archive, md5s = fake_cifar()
    official_like(monkeypatch, archive, md5s)
    dm = CIFAR10DataModule(root=tmp_path, download=True, num_classes=4, val_size=2, aug=PlainAug())
    dm.prepare_data()
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(
        DataError,
        match=r"test_batch has MD5 .*delete .*cifar-10-batches-py and "
        r"run with data.download=true",
    ):
        dm.arrays("train")
    assert Path(batch).exists()  # the user's files are reported, not deleted
