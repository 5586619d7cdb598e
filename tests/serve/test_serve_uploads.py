"""Upload checks of ``brainmaps serve``: content sniffing, zip traversal and zip-bomb limits."""

from __future__ import annotations

import gzip
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainmaps.exceptions import BrainmapsError, ConfigError
from brainmaps.serve import zipped
from brainmaps.serve.uploads import (
    Scan,
    UploadError,
    UploadLimits,
    safe_name,
    sniff,
    unpack_upload,
    upload_kind,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of a tiny 4x4x4 float32 image as .nii and .nii.gz (NIfTI-1 and -2)."""
    folder = tmp_path_factory.mktemp("images")
    data = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    out = {}
    for name, cls in (("nii", nib.Nifti1Image), ("nii2", nib.Nifti2Image)):
        for suffix in (".nii", ".nii.gz"):
            path = folder / f"img-{name}{suffix}"
            nib.save(cls(data, np.eye(4)), path)
            out[name + suffix[4:]] = path.read_bytes()
    return out


@pytest.fixture
def workdir(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_zip(path: Path, members: dict[str, bytes], **kwargs) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, **kwargs) as zf:
        for name, data in members.items():
            if name.endswith("/"):
                zf.mkdir(name.rstrip("/"))
            else:
                zf.writestr(name, data)
    return path


def raw_zip(path: Path, infos: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    """A zip written from ZipInfo objects as given (names zipfile would not normalise)."""
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in infos:
            zf.writestr(info, data)
    return path


def upload_error(excinfo) -> UploadError:
    assert isinstance(excinfo.value, UploadError)
    assert isinstance(excinfo.value, BrainmapsError)
    return excinfo.value


# ---------------------------------------------------------------------------- kinds, names


@pytest.mark.parametrize(
    ("filename", "kind"),
    [("a.nii", "nii"), ("A.NII.GZ", "nii.gz"), ("x.y.Nii.Gz", "nii.gz"), ("scans.ZIP", "zip")],
)
def test_upload_kind_accepts_the_three_kinds_in_any_case(filename, kind):
    assert upload_kind(filename) == kind


@pytest.mark.parametrize("filename", ["scan.png", "scan.nii.bz2", "scan.gz", "scan", "nii"])
def test_upload_kind_refuses_other_names_with_415(filename):
    with pytest.raises(UploadError) as excinfo:
        upload_kind(filename)
    err = upload_error(excinfo)
    assert err.status == 415
    assert repr(filename) in str(err)
    assert "'.nii', '.nii.gz' or '.zip'" in str(err)


def test_sniff_recognises_nifti1_nifti2_gzip_and_zip(tmp_path, images):
    assert sniff(write(tmp_path / "a", images["nii"])) == "nii"
    assert sniff(write(tmp_path / "b", images["nii.gz"])) == "nii.gz"
    assert sniff(write(tmp_path / "c", images["nii2"])) == "nii"
    assert sniff(write(tmp_path / "d", images["nii2.gz"])) == "nii.gz"
    assert sniff(make_zip(tmp_path / "e", {"a.nii": images["nii"]})) == "zip"
    assert sniff(make_zip(tmp_path / "f", {})) == "zip"  # an empty zip: b"PK\x05\x06"


def test_sniff_recognises_a_big_endian_nifti1_header(tmp_path, images):
    header = nib.Nifti1Header(endianness=">")
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.float32)
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4), header=header)
    nib.save(img, tmp_path / "big.nii")
    raw = (tmp_path / "big.nii").read_bytes()
    assert raw[:4] == struct.pack(">i", 348)
    assert sniff(tmp_path / "big.nii") == "nii"


def test_sniff_refuses_a_nifti_magic_without_sizeof_hdr(tmp_path, images):
    raw = bytearray(images["nii"])
    raw[:4] = struct.pack("<i", 349)
    with pytest.raises(UploadError) as excinfo:
        sniff(write(tmp_path / "bad", bytes(raw)))
    assert upload_error(excinfo).status == 415


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 600, "a PNG image"),
        (b"hello, this is not an image\n" * 30, "text"),
        (b"\0\1\2\3\xff\xfe" * 100, "unrecognised binary data"),
    ],
)
def test_sniff_says_what_a_foreign_file_is(tmp_path, content, found):
    with pytest.raises(UploadError) as excinfo:
        sniff(write(tmp_path / "foreign.bin", content))
    err = upload_error(excinfo)
    assert err.status == 415
    assert found in str(err) and "foreign.bin" in str(err)


def test_sniff_refuses_a_gzip_that_is_not_nifti_inside(tmp_path):
    with pytest.raises(UploadError) as excinfo:
        sniff(write(tmp_path / "t.gz", gzip.compress(b"just some text\n" * 100)))
    err = upload_error(excinfo)
    assert err.status == 415
    assert "not a gzip-compressed NIfTI" in str(err) and "text" in str(err)


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("a.nii", "nii"),
        ("a.nii.gz", "nii.gz"),
        ("a2.nii", "nii2"),
        ("a2.NII.GZ", "nii2.gz"),
    ],
)
def test_a_single_nifti_upload_is_moved_into_workdir(tmp_path, workdir, images, filename, kind):
    received = write(tmp_path / "upload-1234", images[kind])
    scans = unpack_upload(received, filename, workdir)
    suffix = ".nii.gz" if kind.endswith("gz") else ".nii"
    assert scans == [Scan(filename, workdir / f"scan-000{suffix}")]
    assert scans[0].path.read_bytes() == images[kind]
    assert nib.load(scans[0].path).shape == (4, 4, 4)
    assert not received.exists()
    assert sorted(p.name for p in workdir.iterdir()) == [f"scan-000{suffix}"]


def test_a_second_upload_into_the_same_workdir_takes_the_next_number(tmp_path, workdir, images):
    unpack_upload(write(tmp_path / "u1", images["nii"]), "a.nii", workdir)
    scans = unpack_upload(write(tmp_path / "u2", images["nii.gz"]), "a.nii.gz", workdir)
    assert scans[0].path == workdir / "scan-001.nii.gz"
    assert (workdir / "scan-000.nii").read_bytes() == images["nii"]


def test_a_single_nifti_display_name_is_sanitised(tmp_path, workdir, images):
    scans = unpack_upload(write(tmp_path / "u", images["nii"]), "../../tmp/x y é.nii", workdir)
    assert scans[0].name == "x_y__.nii"
    assert scans[0].path == workdir / "scan-000.nii"


def test_a_wrong_extension_is_refused_with_415(tmp_path, workdir, images):
    received = write(tmp_path / "u", images["nii"])
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "scan.img", workdir)
    err = upload_error(excinfo)
    assert err.status == 415 and "'scan.img'" in str(err)
    assert received.exists() and list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "filename", "found"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 600, "scan.nii.gz", "a PNG image"),
        (b"subject,age\n1,70\n" * 40, "scan.nii.gz", "text"),
        ("nii", "scan.nii.gz", "uncompressed NIfTI"),
        ("nii.gz", "scan.nii", "gzip-compressed NIfTI"),
        ("zip", "scan.nii", "zip archive"),
        ("nii", "scans.zip", "uncompressed NIfTI"),
    ],
)
def test_a_content_that_does_not_match_the_name_is_refused_with_415(
    tmp_path, workdir, images, content, filename, found
):
    server_name = tmp_path / "srv-upload-7f3a"
    if content == "zip":
        received = make_zip(server_name, {"a.nii": images["nii"]})
    else:
        received = write(server_name, images[content] if isinstance(content, str) else content)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, filename, workdir)
    err = upload_error(excinfo)
    assert err.status == 415
    assert repr(filename) in str(err) and found in str(err)
    assert "srv-upload" not in str(err)  # the server-made name is not shown
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("cut", [10, 60])
def test_a_truncated_gzip_is_refused_with_415(tmp_path, workdir, images, cut):
    received = write(tmp_path / "u", images["nii.gz"][:cut])
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "scan.nii.gz", workdir)
    err = upload_error(excinfo)
    assert err.status == 415
    assert "not a gzip-compressed NIfTI" in str(err) and "'scan.nii.gz'" in str(err)
    assert list(workdir.iterdir()) == []


def test_a_corrupt_gzip_is_refused_with_415(tmp_path, workdir, images):
    raw = bytearray(images["nii.gz"])
    raw[12:40] = b"\xff" * 28  # the start of the deflate stream
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(write(tmp_path / "u", bytes(raw)), "scan.nii.gz", workdir)
    err = upload_error(excinfo)
    assert err.status == 415 and "not a gzip-compressed NIfTI" in str(err)


def test_an_empty_upload_is_refused_with_400(tmp_path, workdir):
    for filename in ("scan.nii", "scans.zip"):
        with pytest.raises(UploadError) as excinfo:
            unpack_upload(write(tmp_path / "u", b""), filename, workdir)
        err = upload_error(excinfo)
        assert err.status == 400
        assert "empty" in str(err) and repr(filename) in str(err)
    with pytest.raises(UploadError) as excinfo:
        sniff(tmp_path / "u")
    assert upload_error(excinfo).status == 400


def test_an_upload_larger_than_max_bytes_is_refused_with_413(tmp_path, workdir, images):
    received = write(tmp_path / "u", images["nii"])
    limits = UploadLimits(max_bytes=len(images["nii"]) - 1)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "scan.nii", workdir, limits)
    err = upload_error(excinfo)
    assert err.status == 413 and "'scan.nii'" in str(err) and str(limits.max_bytes) in str(err)
    assert unpack_upload(received, "scan.nii", workdir, UploadLimits(max_bytes=len(images["nii"])))


# ------------------------------------------------------------------------------------- zips


def test_a_zip_yields_its_nifti_members_in_order(tmp_path, workdir, images):
    received = make_zip(
        tmp_path / "u",
        {"sub-01/T1w.nii.gz": images["nii.gz"], "sub-02/T1w.nii": images["nii"]},
    )
    scans = unpack_upload(received, "cohort.zip", workdir)
    assert [s.path.name for s in scans] == ["scan-000.nii.gz", "scan-001.nii"]
    assert [s.name for s in scans] == ["T1w.nii.gz", "T1w.nii"]
    assert scans[0].path.read_bytes() == images["nii.gz"]
    assert scans[1].path.read_bytes() == images["nii"]
    assert received.exists()  # the zip itself is the server's to remove
    assert sorted(p.name for p in workdir.iterdir()) == ["scan-000.nii.gz", "scan-001.nii"]


def test_duplicate_display_names_are_numbered(tmp_path, workdir, images):
    received = make_zip(
        tmp_path / "u",
        {
            "a/T1w.nii": images["nii"],
            "b/T1w.nii": images["nii"],
            "c/t1w.NII": images["nii"],
            "T1w-2.nii": images["nii"],
        },
    )
    names = [s.name for s in unpack_upload(received, "u.zip", workdir)]
    assert names == ["T1w.nii", "T1w-2.nii", "t1w-3.NII", "T1w-2-2.nii"]
    assert len({n.lower() for n in names}) == 4


def test_junk_entries_and_folders_are_skipped(tmp_path, workdir, images):
    received = make_zip(
        tmp_path / "u",
        {
            "scans/": b"",
            "scans/a.nii": images["nii"],
            "__MACOSX/scans/._a.nii": b"\0\5\26\7 apple double",
            "scans/.DS_Store": b"\0\0\0\1Bud1",
            ".hidden.nii": b"not a scan",
        },
    )
    scans = unpack_upload(received, "u.zip", workdir)
    assert [(s.name, s.path.name) for s in scans] == [("a.nii", "scan-000.nii")]
    assert sorted(p.name for p in workdir.iterdir()) == ["scan-000.nii"]


@pytest.mark.parametrize(
    "member",
    ["../evil.nii", "/abs.nii", "a/../../b.nii", "..\\evil.nii", "C:\\evil.nii", "ok/../x.nii"],
)
def test_path_traversal_members_are_refused_with_400(tmp_path, workdir, images, member):
    outside = tmp_path / "outside"
    outside.mkdir()
    received = raw_zip(
        outside / "u",
        [
            (zipfile.ZipInfo("first.nii"), images["nii"]),
            (zipfile.ZipInfo("notes.txt"), b"refused too, but the traversal is named first"),
            (zipfile.ZipInfo(member), images["nii"]),
        ],
    )
    with zipfile.ZipFile(received) as zf:  # the name reached the archive unchanged
        assert zf.namelist()[2] == member
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir)
    err = upload_error(excinfo)
    assert err.status == 400
    assert "path traversal" in str(err) and repr(member) in str(err) and "'u.zip'" in str(err)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert list(workdir.iterdir()) == []


def test_a_traversal_name_is_refused_even_among_junk(tmp_path, workdir, images):
    received = raw_zip(
        tmp_path / "u",
        [(zipfile.ZipInfo("a.nii"), images["nii"]), (zipfile.ZipInfo("../.x"), b"x")],
    )
    with pytest.raises(UploadError, match="path traversal"):
        unpack_upload(received, "u.zip", workdir)


def test_too_many_scans_is_refused_with_413(tmp_path, workdir, images):
    received = make_zip(tmp_path / "u", {f"s{i}.nii": images["nii"] for i in range(4)})
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, UploadLimits(max_scans=3))
    err = upload_error(excinfo)
    assert err.status == 413 and "4 NIfTI files" in str(err) and "'u.zip'" in str(err)
    assert list(workdir.iterdir()) == []
    assert len(unpack_upload(received, "u.zip", workdir, UploadLimits(max_scans=4))) == 4


def test_too_many_members_is_refused_with_413(tmp_path, workdir, images):
    members = {"a.nii": images["nii"]} | {f"__MACOSX/junk{i}": b"" for i in range(5)}
    received = make_zip(tmp_path / "u", members)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, UploadLimits(max_members=5))
    err = upload_error(excinfo)
    assert err.status == 413 and "6 entries" in str(err) and "'u.zip'" in str(err)
    assert list(workdir.iterdir()) == []
    assert len(unpack_upload(received, "u.zip", workdir, UploadLimits(max_members=6))) == 1


def test_too_many_members_is_refused_when_the_end_record_cannot_be_read(
    tmp_path, workdir, images, monkeypatch
):
    received = make_zip(tmp_path / "u", {f"{i}.nii": images["nii"] for i in range(3)})
    monkeypatch.setattr(zipped, "_directory_size", lambda path: None)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, UploadLimits(max_members=2))
    err = upload_error(excinfo)
    assert err.status == 413 and "3 entries" in str(err)


def test_too_many_members_is_refused_before_zipfile_reads_the_directory(
    tmp_path, workdir, images, monkeypatch
):
    received = make_zip(tmp_path / "u", {f"{i}.nii": images["nii"] for i in range(3)})

    def no_zipfile(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile was called")

    monkeypatch.setattr(zipped.zipfile, "ZipFile", no_zipfile)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, UploadLimits(max_members=2))
    assert upload_error(excinfo).status == 413


def test_an_oversized_central_directory_is_refused_with_413(tmp_path, workdir, images):
    infos = []
    for i in range(3):
        info = zipfile.ZipInfo(f"{i}.nii")
        info.comment = b"c" * 5000  # 3 entries, but a directory of more than 3 x 4096 bytes
        infos.append((info, images["nii"]))
    received = raw_zip(tmp_path / "u", infos)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, UploadLimits(max_members=3))
    err = upload_error(excinfo)
    assert err.status == 413 and "central directory of" in str(err) and "'u.zip'" in str(err)
    assert len(unpack_upload(received, "u.zip", workdir, UploadLimits(max_members=4))) == 3


def test_a_zip_without_nifti_members_is_refused_with_400(tmp_path, workdir):
    for members in ({}, {"d/": b"", "__MACOSX/._a.nii": b"x"}):
        received = make_zip(tmp_path / "u", members)
        with pytest.raises(UploadError) as excinfo:
            unpack_upload(received, "u.zip", workdir)
        err = upload_error(excinfo)
        assert err.status == 400 and "no .nii or .nii.gz" in str(err)


def test_a_non_nifti_member_is_refused_with_415(tmp_path, workdir, images):
    received = make_zip(tmp_path / "u", {"a.nii": images["nii"], "docs/notes.txt": b"hi"})
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir)
    err = upload_error(excinfo)
    assert err.status == 415 and "'docs/notes.txt' is not a NIfTI file" in str(err)
    assert "'u.zip'" in str(err)
    assert list(workdir.iterdir()) == []


def test_a_symlink_member_is_refused_with_400(tmp_path, workdir, images):
    link = zipfile.ZipInfo("link.nii")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    received = raw_zip(tmp_path / "u", [(zipfile.ZipInfo("a.nii"), images["nii"]), (link, b"/")])
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir)
    err = upload_error(excinfo)
    assert err.status == 400 and "symbolic link" in str(err) and "'link.nii'" in str(err)
    assert list(workdir.iterdir()) == []


def test_an_encrypted_member_is_refused_with_400(tmp_path, workdir, images):
    received = make_zip(tmp_path / "u", {"a.nii": images["nii"]})
    raw = bytearray(received.read_bytes())
    # Set bit 0 (encrypted) of the general purpose flags, in the local and central headers.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(signature) + offset
        raw[at] |= 0x1
    write(received, bytes(raw))
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir)
    err = upload_error(excinfo)
    assert err.status == 400 and "'a.nii' is encrypted" in str(err)
    assert "expected an unencrypted zip" in str(err)  # refused before zipfile tries to read it


def test_a_member_whose_content_is_not_what_its_name_says_is_refused_with_415(
    tmp_path, workdir, images
):
    cases = [
        ("b.nii.gz", images["nii"], "uncompressed NIfTI"),
        ("b.nii", images["nii.gz"], "gzip-compressed NIfTI"),
        ("b.nii", b"plain text, not a scan\n" * 30, "text"),
        ("b.nii.gz", gzip.compress(b"\x89PNG\r\n\x1a\n" + b"\0" * 600), "a PNG image"),
    ]
    for member, content, found in cases:
        received = make_zip(tmp_path / "u", {"a.nii": images["nii"], member: content})
        with pytest.raises(UploadError) as excinfo:
            unpack_upload(received, "u.zip", workdir)
        err = upload_error(excinfo)
        assert err.status == 415
        assert repr(member) in str(err) and found in str(err) and "'u.zip'" in str(err)
        assert ".part" not in str(err)  # the temporary name is not shown
        assert list(workdir.iterdir()) == []  # the good first member was removed too


def test_a_corrupt_zip_is_refused_with_400(tmp_path, workdir, images):
    good = make_zip(tmp_path / "good", {"a.nii": images["nii"]}).read_bytes()
    received = write(tmp_path / "u", good[: len(good) // 2])  # no central directory
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir)
    err = upload_error(excinfo)
    assert err.status == 400 and "corrupt" in str(err) and "'u.zip'" in str(err)


def test_a_corrupt_member_is_refused_with_400_and_cleaned_up(tmp_path, workdir, images):
    received = make_zip(tmp_path / "u", {"a.nii": images["nii"], "b.nii": images["nii"] * 2})
    raw = bytearray(received.read_bytes())
    second = raw.index(b"PK\x03\x04", 4)
    data = second + 30 + len("b.nii")
    raw[data + 20 : data + 40] = bytes(20)  # damage the deflate data of b.nii
    write(received, bytes(raw))
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir)
    err = upload_error(excinfo)
    assert err.status == 400 and "corrupt" in str(err) and "'b.nii'" in str(err)
    assert list(workdir.iterdir()) == []


# ---------------------------------------------------------------------------------- zip bombs


def test_a_zip_bomb_is_refused_by_its_declared_size_with_413(tmp_path, workdir, images):
    received = make_zip(tmp_path / "u", {"a.nii": images["nii"], "bomb.nii": bytes(50 * 10**6)})
    assert received.stat().st_size < 200_000  # 50 MB of zeros deflate to about 50 kB
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, UploadLimits(max_uncompressed_bytes=10 * 10**6))
    err = upload_error(excinfo)
    assert err.status == 413 and "'u.zip'" in str(err) and str(10 * 10**6) in str(err)
    assert f"would extract to {50 * 10**6 + len(images['nii'])} bytes" in str(err)
    assert list(workdir.iterdir()) == []


def _patch_sizes(raw: bytearray, name: bytes, file_size: int) -> None:
    """Overwrite the uncompressed size of member ``name`` in its local and central headers."""
    local = raw.index(b"PK\x03\x04")
    while raw[local + 30 : local + 30 + len(name)] != name:
        local = raw.index(b"PK\x03\x04", local + 4)
    struct.pack_into("<L", raw, local + 22, file_size)
    central = raw.index(b"PK\x01\x02")
    while raw[central + 46 : central + 46 + len(name)] != name:
        central = raw.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<L", raw, central + 24, file_size)


def test_a_zip_whose_directory_understates_a_size_is_refused(tmp_path, workdir, images):
    # The directory says 1000 bytes for 50 MB of zeros: the declared total is under the
    # limit. CPython's zipfile stops at the declared size, then the CRC does not match.
    received = make_zip(tmp_path / "u", {"a.nii": images["nii"], "bomb.nii": bytes(50 * 10**6)})
    raw = bytearray(received.read_bytes())
    _patch_sizes(raw, b"bomb.nii", 1000)
    write(received, bytes(raw))
    with zipfile.ZipFile(received) as zf:
        assert zf.getinfo("bomb.nii").file_size == 1000
    limits = UploadLimits(max_uncompressed_bytes=10 * 10**6)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, limits)
    err = upload_error(excinfo)
    assert err.status == 400 and "'bomb.nii'" in str(err) and "CRC" in str(err)
    assert list(workdir.iterdir()) == []


class _LyingExtFile:
    """A member reader that yields more bytes than the directory declares."""

    def __init__(self, n_bytes: int) -> None:
        self.left = n_bytes

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        return bytes(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_the_bytes_written_are_counted_whatever_the_directory_declares(
    tmp_path, workdir, images, monkeypatch
):
    # A zip reader less strict than CPython's could yield more than declared: stand in
    # for one, so that only the running count of written bytes can stop the extraction.
    received = make_zip(tmp_path / "u", {"a.nii": images["nii"], "b.nii": images["nii"]})
    real_open = zipfile.ZipFile.open
    reads = []

    def lying_open(self, info, *args, **kwargs):
        if getattr(info, "filename", info) == "b.nii":
            reads.append(info)
            return _LyingExtFile(30 * 2**20)
        return real_open(self, info, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    limits = UploadLimits(max_uncompressed_bytes=5 * 2**20)
    with pytest.raises(UploadError) as excinfo:
        unpack_upload(received, "u.zip", workdir, limits)
    err = upload_error(excinfo)
    assert reads, "the member was not read"
    assert err.status == 413 and "'b.nii'" in str(err) and "more than its directory" in str(err)
    assert list(workdir.iterdir()) == []  # nor any temporary file of the aborted member


def test_a_failed_write_removes_the_partial_files(tmp_path, workdir, images, monkeypatch):
    received = make_zip(tmp_path / "u", {"a.nii": images["nii"], "b.nii": images["nii"]})
    real_open = zipfile.ZipFile.open

    def failing_open(self, info, *args, **kwargs):
        if getattr(info, "filename", info) == "b.nii":
            raise KeyboardInterrupt
        return real_open(self, info, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", failing_open)
    with pytest.raises(KeyboardInterrupt):
        unpack_upload(received, "u.zip", workdir)
    assert list(workdir.iterdir()) == []


def test_a_zip64_directory_count_is_read(tmp_path, workdir, images):
    received = make_zip(tmp_path / "u", {f"{i}.nii": images["nii"] for i in range(3)})
    raw = bytearray(received.read_bytes())
    # Rewrite the end record as zip64 would: 0xFFFF entries, pointing to a zip64 record.
    eocd = raw.rindex(b"PK\x05\x06")
    *_, cd_bytes, cd_offset, _ = struct.unpack_from("<4s4H2LH", raw, eocd)
    zip64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 3, 3, cd_bytes, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, cd_bytes, cd_offset, 0)
    write(received, bytes(raw[:eocd]) + zip64 + locator + end)
    assert zipped._directory_size(received) == (3, cd_bytes)
    assert len(unpack_upload(received, "u.zip", workdir)) == 3


# ----------------------------------------------------------------------------- safe_name, limits


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("T1w.nii.gz", "T1w.nii.gz"),
        ("../../etc/passwd", "passwd"),
        ("..", "__"),
        (".", "_"),
        ("", "upload"),
        ("dir/", "upload"),
        ("C:\\Users\\me\\scan 1.nii", "scan_1.nii"),
        ("sujet-été_01.nii", "sujet-_t__01.nii"),
        ("脑.nii", "_.nii"),
        (".bashrc", "_bashrc"),
        ("a\0b\nc.nii", "a_b_c.nii"),
        ("<script>.nii", "_script_.nii"),
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "..", "...", "a/..", "\\..\\..", "x" * 300, "é" * 300]
)
def test_safe_name_is_never_a_path_or_empty(name):
    clean = safe_name(name)
    assert clean and len(clean) <= 100
    assert "/" not in clean and "\\" not in clean
    assert set(clean) != {"."} and not clean.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in clean)


def test_safe_name_keeps_the_suffix_of_a_long_name():
    clean = safe_name("a" * 300 + ".NII.GZ")
    assert len(clean) == 100 and clean.endswith("a.NII.GZ")


def test_upload_error_carries_the_status():
    assert UploadError("x").status == 400
    assert UploadError("x", status=413).status == 413
    assert isinstance(UploadError("x"), BrainmapsError)


@pytest.mark.parametrize(
    "field", ["max_bytes", "max_scans", "max_uncompressed_bytes", "max_members"]
)
@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, None])
def test_upload_limits_must_be_positive_integers(field, value):
    with pytest.raises(ConfigError) as excinfo:
        UploadLimits(**{field: value})
    assert f"UploadLimits.{field}" in str(excinfo.value) and repr(value) in str(excinfo.value)


def test_upload_limits_defaults():
    limits = UploadLimits()
    assert (limits.max_bytes, limits.max_scans) == (200 * 2**20, 10)
    assert (limits.max_uncompressed_bytes, limits.max_members) == (2 * 2**30, 100)
    assert UploadLimits(max_scans=1).max_scans == 1


def test_nothing_is_left_in_workdir_after_errors(tmp_path, workdir, images):
    bad = [
        (write(tmp_path / "u1", b"text" * 200), "a.nii"),
        (make_zip(tmp_path / "u2", {"a.nii": images["nii"], "b.txt": b""}), "u.zip"),
        (make_zip(tmp_path / "u3", {"a.nii": images["nii"], "b.nii": b"x" * 400}), "u.zip"),
        (write(tmp_path / "u4", zlib.compress(b"x")), "a.nii.gz"),
    ]
    for received, filename in bad:
        with pytest.raises(UploadError):
            unpack_upload(received, filename, workdir)
        assert list(workdir.iterdir()) == []
