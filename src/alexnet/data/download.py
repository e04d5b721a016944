"""CIFAR-10's official archive: fetched with a timeout, checked against its published MD5s,
unpacked safely, or a clear error — never a corrupt dataset that trains on garbage.

The checksums are torchvision's (`torchvision.datasets.CIFAR10`: `tgz_md5` for
cifar-10-python.tar.gz, one MD5 per batch file). The archive is written under a temporary name
and renamed only once its MD5 matches; it is unpacked into a temporary folder and moved into
place only once every batch file matches, so an interrupted download or unpacking leaves nothing
that a later run would take for the dataset.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
from pathlib import Path
from urllib.request import urlopen

from alexnet.data.folder import DataError

log = logging.getLogger(__name__)


class DownloadFailed(DataError):
    """The network did not deliver (offline, timeout, refused); nothing was written."""


def _official() -> tuple[str, str, str, str, dict[str, str]]:
    """(url, archive name, archive MD5, batches folder, {batch file: MD5}) from torchvision."""
    from torchvision.datasets import CIFAR10

    batches = dict(CIFAR10.train_list + CIFAR10.test_list)
    batches[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return CIFAR10.url, CIFAR10.filename, CIFAR10.tgz_md5, CIFAR10.base_folder, batches


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` if its MD5 is `md5`; raises DataError otherwise."""
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s to %s", url, dest)
    try:
        with urlopen(url, timeout=timeout) as response, part.open("wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
    except OSError as err:  # URLError, timeouts, connection resets are all OSErrors
        part.unlink(missing_ok=True)
        raise DownloadFailed(f"could not download {url} ({err})") from err
    got = md5sum(part)
    if got != md5:
        part.unlink()
        raise DataError(
            f"the download of {url} has MD5 {got}, expected {md5}: it is corrupt or "
            f"not the official file; nothing was kept, run again to retry"
        )
    part.replace(dest)
    return dest


def verify_batches(folder: Path) -> None:
    """Check every CIFAR-10 batch file in `folder` (cifar-10-batches-py/) against its MD5."""
    *_, batches = _official()
    for name, md5 in batches.items():
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{path} is missing: the CIFAR-10 batches are incomplete; delete "
                f"{folder} and run with data.download=true"
            )
        got = md5sum(path)
        if got != md5:
            raise DataError(
                f"{path} has MD5 {got}, expected {md5}: the CIFAR-10 batches are "
                f"corrupt; delete {folder} and run with data.download=true"
            )


def download_cifar10(folder: Path, timeout: float = 30.0) -> Path:
    """Make `folder`/cifar-10-batches-py hold the verified official batches; returns that path.

    An archive already in `folder` (copied there by hand, say) is used if its MD5 matches and
    refused with a clear error if not.
    """
    url, name, md5, base, _ = _official()
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / name
    if archive.exists():
        got = md5sum(archive)
        if got != md5:
            raise DataError(
                f"{archive} has MD5 {got}, expected {md5}: it is corrupt or not the "
                f"official CIFAR-10 archive; delete it and run again"
            )
    else:
        fetch(url, archive, md5, timeout)
    staging = folder / f".{base}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # filter="data" refuses absolute paths, links out of the folder and device files.
            tar.extractall(staging, filter="data")
        verify_batches(staging / base)
        (staging / base).replace(folder / base)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(
            f"{archive} cannot be unpacked safely ({type(err).__name__}: {err}); "
            f"delete it and run again"
        ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("CIFAR-10 verified and unpacked in %s", folder / base)
    return folder / base
