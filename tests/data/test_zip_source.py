"""Specification of ZipSource: streaming reads and an archive that is never trusted."""

from __future__ import annotations

import io
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

import covidcxr
from covidcxr.errors import InvalidImageError, SourceError
from covidcxr.sources import (
    CatalogSource,
    FolderSource,
    SkippedItemsWarning,
    ZipLimits,
    ZipSource,
)


def _open(uri: Any, **options: Any) -> CatalogSource:
    """:func:`covidcxr.open_source`, typed as the catalogue source it returns here."""
    source = covidcxr.open_source(uri, **options)
    assert isinstance(source, CatalogSource)
    return source


def _zip_folder(folder: Path, archive: Path, *, wrapper: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, wrapper + path.relative_to(folder).as_posix())
    return archive


def _zip_members(archive: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return archive


def test_zip_yields_the_same_records_as_the_folder(classes_folder: Path, tmp_path: Path) -> None:
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip")
    from_zip = [(x.label, x.pixels.tobytes()) for x in ZipSource(archive)]
    from_folder = [(x.label, x.pixels.tobytes()) for x in FolderSource(classes_folder)]
    assert from_zip == from_folder


def test_reading_does_not_extract_anything(classes_folder: Path, tmp_path: Path) -> None:
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip")
    before = set(tmp_path.rglob("*"))
    list(ZipSource(archive))
    assert set(tmp_path.rglob("*")) == before


def test_wrapper_folder_is_detected_and_ids_name_the_member(
    qu_ex_folder: Path, tmp_path: Path
) -> None:
    archive = _zip_folder(qu_ex_folder, tmp_path / "qu.zip", wrapper="Infection Segmentation Data/")
    source = ZipSource(archive, layout="covid-qu-ex", split="Train")
    xrays = list(source)
    assert len(xrays) == 6
    covid = next(x for x in xrays if x.label == "covid-19")
    assert len(covid.boxes) == 2
    assert covid.id.startswith(f"{archive}!/Infection Segmentation Data/Train/COVID-19/images/")


def test_open_source_reaches_zip_by_suffix(classes_folder: Path, tmp_path: Path) -> None:
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip")
    assert isinstance(covidcxr.open_source(str(archive)), ZipSource)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil/COVID/a.png", "climbs out"),
        ("COVID/../../a.png", "climbs out"),
        ("/etc/COVID/a.png", "absolute path"),
        ("C:/COVID/a.png", "absolute path"),
        ("COVID\\..\\..\\a.png", "backslashes"),
    ],
)
def test_path_traversal_refuses_the_archive(
    tmp_path: Path, make: Any, name: str, problem: str
) -> None:
    archive = _zip_members(tmp_path / "evil.zip", {"COVID/ok.png": make.encode(make.gradient())})
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(SourceError, match=problem):
        ZipSource(archive)


def test_symlink_member_refuses_the_archive(tmp_path: Path, make: Any) -> None:
    archive = _zip_members(tmp_path / "link.zip", {"COVID/ok.png": make.encode(make.gradient())})
    link = zipfile.ZipInfo("COVID/passwd.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr(link, "/etc/passwd")
    with pytest.raises(SourceError, match="symbolic link"):
        ZipSource(archive)


def test_a_member_name_given_twice_refuses_the_archive(tmp_path: Path, make: Any) -> None:
    archive = tmp_path / "twice.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("COVID/a.png", make.encode(make.gradient(seed=1)))
        handle.writestr("Normal/b.png", make.encode(make.gradient(seed=2)))
        with pytest.warns(UserWarning, match="Duplicate name"):
            handle.writestr("COVID/a.png", make.encode(make.gradient(seed=3)))
    with pytest.raises(SourceError, match=r"twice\.zip: member 'COVID/a\.png' appears more"):
        ZipSource(archive)


def test_highly_compressed_member_is_refused_as_a_bomb(tmp_path: Path) -> None:
    archive = _zip_members(tmp_path / "bomb.zip", {"COVID/bomb.png": b"\0" * (8 << 20)})
    with pytest.raises(SourceError, match="compression ratio"):
        ZipSource(archive)


def test_a_bomb_that_understates_its_size_is_read_with_bounded_memory(tmp_path: Path) -> None:
    # 64 MiB of zeros whose headers declare 5,000 bytes: the ratio check never fires, and
    # one read() decompressed all of it before zipfile cut it to the declared size.
    import resource
    import struct

    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("COVID/bomb.png", b"\0" * (64 << 20))
    data = bytearray(archive.read_bytes())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 5000)  # uncompressed size, local header
    struct.pack_into("<I", data, central + 24, 5000)  # and central directory
    archive.write_bytes(bytes(data))
    source = ZipSource(archive, on_error="skip")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.warns(SkippedItemsWarning):
        assert list(source) == []  # the only member fails its CRC check
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 32 << 10  # well under the 64 MiB it would have expanded to
    assert "CRC" in source.skipped[0].reason


def test_bzip2_and_lzma_members_refuse_the_archive(tmp_path: Path, make: Any) -> None:
    # Their decompressors expand a whole input chunk at once, however far: unboundable.
    archive = tmp_path / "bz.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_BZIP2) as handle:
        handle.writestr("COVID/a.png", make.encode(make.gradient()))
    with pytest.raises(SourceError, match=r"'COVID/a\.png' is compressed with method 12"):
        ZipSource(archive)


@pytest.mark.parametrize(
    "extra",
    [
        {"__MACOSX/cxr/COVID/._a.png": b"\x00\x05\x16\x07"},
        {".DS_Store": b"\x00\x00\x00\x01Bud1"},
    ],
    ids=["macosx-folder", "ds-store"],
)
def test_a_zip_made_by_macos_finder_keeps_its_labels(
    tmp_path: Path, make: Any, extra: dict[str, bytes]
) -> None:
    # Finder adds __MACOSX/ and .DS_Store beside the folder it compresses; counted as
    # top-level entries, they kept the wrapper folder and every label was lost.
    png = make.encode(make.gradient())
    archive = _zip_members(
        tmp_path / "mac.zip", {"cxr/COVID/a.png": png, "cxr/Normal/b.png": png, **extra}
    )
    source = ZipSource(archive)
    assert source.layout == "classes"
    assert [xray.label for xray in source] == ["covid-19", "normal"]


def test_members_named_with_a_leading_dot_slash_are_read(tmp_path: Path, make: Any) -> None:
    # "zip -r x.zip ./" names members "./COVID/a.png"; they looked hidden, and the
    # archive was refused as holding no images.
    png = make.encode(make.gradient())
    archive = _zip_members(tmp_path / "dot.zip", {"./COVID/a.png": png, "./Normal/b.png": png})
    source = ZipSource(archive)
    assert [xray.label for xray in source] == ["covid-19", "normal"]
    assert next(xray.id for xray in source).endswith("!/COVID/a.png")


def test_member_count_limit(tmp_path: Path, make: Any) -> None:
    png = make.encode(make.gradient())
    archive = _zip_members(tmp_path / "many.zip", {f"COVID/{i}.png": png for i in range(5)})
    with pytest.raises(SourceError, match="more than the limit of 4"):
        ZipSource(archive, limits=ZipLimits(max_members=4))


def test_total_size_limit(tmp_path: Path, make: Any) -> None:
    png = make.encode(make.gradient())
    archive = _zip_members(tmp_path / "big.zip", {f"COVID/{i}.png": png for i in range(3)})
    with pytest.raises(SourceError, match="expand to more than"):
        ZipSource(archive, limits=ZipLimits(max_total_size=len(png) * 2))


def test_not_a_zip_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.zip"
    path.write_text("hello")
    with pytest.raises(SourceError, match="not a readable zip"):
        ZipSource(path)


def test_corrupt_member_is_skipped_with_a_record(tmp_path: Path, make: Any) -> None:
    archive = _zip_members(
        tmp_path / "c.zip",
        {"COVID/good.png": make.encode(make.gradient()), "COVID/bad.png": b"garbage"},
    )
    source = ZipSource(archive, on_error="skip")
    with pytest.warns(SkippedItemsWarning):
        assert len(list(source)) == 1
    (skipped,) = source.skipped
    assert skipped.path.endswith("!/COVID/bad.png")
    with pytest.raises(InvalidImageError, match=r"bad\.png"):
        list(ZipSource(archive))


def test_file_object_archives_are_read_too(classes_folder: Path, tmp_path: Path) -> None:
    data = _zip_folder(classes_folder, tmp_path / "cxr.zip").read_bytes()
    assert len(ZipSource(io.BytesIO(data))) == 5


def test_extract_writes_only_below_the_given_folder(classes_folder: Path, tmp_path: Path) -> None:
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip")
    target = ZipSource(archive).extract_to(tmp_path / "out")
    extracted = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert extracted == sorted(
        p.relative_to(classes_folder).as_posix() for p in classes_folder.rglob("*") if p.is_file()
    )


def test_extract_never_overwrites(classes_folder: Path, tmp_path: Path) -> None:
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip")
    target = tmp_path / "out"
    (target / "COVID").mkdir(parents=True)
    mine = target / "COVID" / "img_0.png"
    mine.write_bytes(b"the user's own file")
    with pytest.raises(SourceError, match="already exists"):
        ZipSource(archive).extract_to(target)
    assert mine.read_bytes() == b"the user's own file"
    ZipSource(archive).extract_to(target, on_exists="skip")
    assert mine.read_bytes() == b"the user's own file"
    assert (target / "NORMAL" / "img_0.png").is_file()


def test_extract_refuses_to_follow_a_symlinked_folder_out(
    classes_folder: Path, tmp_path: Path
) -> None:
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip")
    target = tmp_path / "out"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "COVID").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SourceError, match="outside"):
        ZipSource(archive).extract_to(target)
    assert not any(elsewhere.iterdir())


def test_an_interrupted_extraction_leaves_no_truncated_file(
    classes_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip")
    target = tmp_path / "out"
    real_copy = shutil.copyfileobj

    def copy_half_then_fail(source: Any, destination: Any, length: int = 0) -> None:
        destination.write(source.read(10))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", copy_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ZipSource(archive).extract_to(target)
    assert not [p for p in target.rglob("*") if p.is_file()]  # nothing half-written kept
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    ZipSource(archive).extract_to(target, on_exists="skip")  # a rerun completes the set
    for path in classes_folder.rglob("*.png"):
        assert (target / path.relative_to(classes_folder)).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("wrapper", ["train/", "test/", "cxr/train/"])
def test_a_zip_wrapped_in_a_split_folder_reads_its_class_folders(
    classes_folder: Path, tmp_path: Path, wrapper: str
) -> None:
    # docs/data.rst: "A single folder wrapping the whole dataset is stripped
    # automatically". A split folder wrapping the class folders was read as a class.
    archive = _zip_folder(classes_folder, tmp_path / "cxr.zip", wrapper=wrapper)
    source = _open(archive)
    assert source.layout == "classes"
    assert source.classes == ("covid-19", "normal", "pneumonia")
    assert len(source) == 5
    split = wrapper.rstrip("/").split("/")[-1]
    assert {x.meta["split"] for x in source} == {split}


def test_a_zip_of_train_and_test_folders_reads_both(
    classes_folder: Path, tmp_path: Path, make: Any
) -> None:
    archive = tmp_path / "cxr.zip"
    members = {
        f"{split}/{path.relative_to(classes_folder).as_posix()}": path.read_bytes()
        for split in ("train", "test")
        for path in sorted(classes_folder.rglob("*.png"))
    }
    _zip_members(archive, members)
    source = ZipSource(archive)
    assert len(source) == 10
    assert len(ZipSource(archive, split="test")) == 5


def test_a_zipped_qu_ex_split_folder_yields_no_masks(qu_ex_folder: Path, tmp_path: Path) -> None:
    archive = _zip_folder(qu_ex_folder / "Val", tmp_path / "val.zip", wrapper="Val/")
    source = _open(archive)
    assert source.layout == "covid-qu-ex"
    assert len(source) == 6
    assert all("/images/" in entry.name for entry in source.entries)


def test_a_zip_of_loose_scans_is_read_unlabelled(tmp_path: Path, make: Any) -> None:
    archive = _zip_members(
        tmp_path / "scans.zip",
        {
            "new-scans/a.png": make.encode(make.gradient()),
            "new-scans/x/b.png": make.encode(make.gradient(seed=2)),
        },
    )
    source = _open(archive)
    assert source.layout == "unlabelled"
    assert [x.label for x in source] == [None, None]


def test_a_member_that_fails_its_crc_is_skipped_naming_it_once(tmp_path: Path, make: Any) -> None:
    data = make.encode(make.gradient())
    archive = _zip_members(tmp_path / "c.zip", {"COVID/good.png": data, "COVID/bad.png": data})
    raw = bytearray(archive.read_bytes())
    second = raw.index(b"COVID/bad.png") + len(b"COVID/bad.png")  # its local header's name
    raw[second + 40] ^= 0xFF  # a byte of its (stored or deflated) data
    archive.write_bytes(bytes(raw))
    source = ZipSource(archive, on_error="skip")
    with pytest.warns(SkippedItemsWarning):
        assert len(list(source)) == 1
    (skipped,) = source.skipped
    assert skipped.path.endswith("!/COVID/bad.png")
    assert "corrupt archive member" in skipped.reason
    assert "bad.png" not in skipped.reason
