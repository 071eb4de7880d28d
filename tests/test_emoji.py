import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from ddpmlab import downloads, emoji
from ddpmlab.config import DataConfig
from ddpmlab.data import load_dataset
from ddpmlab.downloads import NpmTarball, sha512_integrity
from ddpmlab.errors import DataError

ENTRIES = [  # emoji.json's fields that the loader reads
    {"name": "SMILING FACE WITH HEART-SHAPED EYES", "image": "1f60d.png", "category": "Smileys & Emotion",
     "sort_order": 2, "has_img_google": True},
    {"name": "RED APPLE", "image": "1f34e.png", "category": "Food & Drink", "sort_order": 1, "has_img_google": True},
    {"name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "image": "1f3fb.png", "category": "Component", "sort_order": 3,
     "has_img_google": True},
    {"name": "NO GOOGLE IMAGE", "image": "ffff.png", "category": "Objects", "sort_order": 4, "has_img_google": False},
]


def _rgba_png(colour) -> bytes:
    """A 64x64 emoji: a transparent border around an opaque 32x32 square of colour."""
    a = np.zeros((64, 64, 4), np.uint8)
    a[16:48, 16:48] = (*colour, 255)
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _add(tar, name, data: bytes, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _tarball(path, extra=()):
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "package/emoji.json", json.dumps(ENTRIES).encode())
        _add(tar, "package/LICENSE", b"MIT")
        _add(tar, "package/README.md", b"not extracted")
        for image, colour in (("1f60d.png", (255, 200, 0)), ("1f34e.png", (255, 0, 0)), ("1f3fb.png", (250, 220, 180))):
            _add(tar, f"package/img/google/64/{image}", _rgba_png(colour))
        _add(tar, "package/img/google/sheets/big.png", b"not extracted")
        for args in extra:
            _add(tar, *args)
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A data root with a fake emoji-datasource tarball placed by hand, pinned by its own checksum."""
    root = tmp_path / "data"
    (root / "emoji").mkdir(parents=True)
    tgz = _tarball(root / "emoji" / emoji.PACKAGE.filename)
    monkeypatch.setattr(emoji, "PACKAGE", NpmTarball(emoji.PACKAGE.name, emoji.PACKAGE.version, sha512_integrity(tgz)))
    monkeypatch.setattr(downloads, "_download", lambda *a: pytest.fail("the tests never touch the network"))
    return root, tgz


def _no_leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_emoji_loads_composited_labelled_and_captioned(fake):
    root, _ = fake
    data = load_dataset(DataConfig(name="emoji", root=str(root)))
    assert data.x.shape == (2, 3, 32, 32) and data.x.min() >= -1 and data.x.max() <= 1
    assert data.captions == ("red apple", "smiling face with heart-shaped eyes")  # sort order; Component left out
    assert data.class_names == ("Food & Drink", "Smileys & Emotion") and data.y.tolist() == [0, 1]
    assert data.x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]  # transparent corner -> white background
    assert data.x[0, :, 16, 16].tolist() == [1.0, -1.0, -1.0]  # opaque red centre
    folder = root / "emoji" / f"{emoji.PACKAGE.name}-{emoji.PACKAGE.version}"
    assert sorted(p.name for p in folder.iterdir()) == ["LICENSE", "ddpmlab-dataset.json", "emoji.json", "img"]
    assert not (folder / "img" / "google" / "sheets").exists()
    provenance = json.loads((folder / "ddpmlab-dataset.json").read_text())
    assert "Apache License 2.0" in provenance["licence"] and provenance["integrity"] == emoji.PACKAGE.integrity
    big = load_dataset(DataConfig(name="emoji", root=str(root), image_size=64))  # read offline from the folder
    assert big.x.shape == (2, 3, 64, 64)
    with pytest.raises(DataError, match="no held-out split"):
        load_dataset(DataConfig(name="emoji", root=str(root)), "test")


def test_truncated_or_altered_tarball_fails_its_checksum_and_extracts_nothing(fake):
    root, tgz = fake
    tgz.write_bytes(tgz.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"fails its checksum .*damaged or truncated\); delete it") as err:
        load_dataset(DataConfig(name="emoji", root=str(root)))
    assert "\n" not in str(err.value)
    assert _no_leftovers(root / "emoji") == [tgz.name]


def test_damaged_download_is_removed(fake, monkeypatch):
    root, tgz = fake
    good = tgz.read_bytes()
    tgz.unlink()

    def truncated_download(pkg, tmp, folder):
        (tmp / pkg.filename).write_bytes(good[: len(good) // 2])
        return tmp / pkg.filename

    monkeypatch.setattr(downloads, "_download", truncated_download)
    with pytest.raises(DataError, match="fails its checksum .*the download was damaged; run again"):
        load_dataset(DataConfig(name="emoji", root=str(root)))
    assert _no_leftovers(root / "emoji") == []  # neither the partial download nor a half-extracted folder

    def good_download(pkg, tmp, folder):
        (tmp / pkg.filename).write_bytes(good)
        return tmp / pkg.filename

    monkeypatch.setattr(downloads, "_download", good_download)
    assert len(load_dataset(DataConfig(name="emoji", root=str(root))).captions) == 2
    assert _no_leftovers(root / "emoji") == [f"{emoji.PACKAGE.name}-{emoji.PACKAGE.version}"]  # download deleted


@pytest.mark.parametrize("member", [
    ("package/../evil.png", b"x"),
    ("/etc/evil.png", b"x"),
    ("package/img/google/64/link.png", b"", tarfile.SYMTYPE, "/etc/passwd"),
])
def test_unsafe_members_stop_the_extraction(tmp_path, member):
    tgz = _tarball(tmp_path / "pkg.tgz", extra=[member])
    dest = tmp_path / "out" / "pkg"
    with pytest.raises(DataError, match="unsafe"):
        downloads.extract(tgz, dest, emoji._keep)
    assert _no_leftovers(tmp_path / "out") == []
    assert not (tmp_path / "evil.png").exists()


def test_corrupt_archive_with_matching_pin_is_an_extraction_error(tmp_path):
    bad = tmp_path / "pkg.tgz"
    bad.write_bytes(b"\x1f\x8b" + b"\x00" * 50)  # a gzip header, then nonsense
    with pytest.raises(DataError, match="could not extract"):
        downloads.extract(bad, tmp_path / "out" / "pkg", emoji._keep)
    assert _no_leftovers(tmp_path / "out") == []


def test_offline_without_npm_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "_npm_pack", lambda pkg, folder: None)

    def offline(pkg, folder):
        raise OSError("network unreachable")

    monkeypatch.setattr(downloads, "_https_get", offline)
    pkg = NpmTarball("emoji-datasource-google", "16.0.0", "sha512-x")
    with pytest.raises(DataError, match=r"network unreachable\); offline, copy https://registry.npmjs.org/"
                                         r"emoji-datasource-google/-/emoji-datasource-google-16.0.0.tgz into"):
        downloads.fetch_and_extract(pkg, tmp_path / "emoji", tmp_path / "emoji" / "x", emoji._keep)
    assert _no_leftovers(tmp_path / "emoji") == []
