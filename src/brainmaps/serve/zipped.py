"""Zip uploads of ``brainmaps serve``: the directory checked before anything is extracted,
then each NIfTI member streamed to a server-made name with its real bytes counted.

Used by :func:`brainmaps.serve.uploads.unpack_upload`; see that module for the rules.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from brainmaps.serve.uploads import (
    _CHUNK,
    Scan,
    UploadError,
    UploadLimits,
    _free_path,
    _mismatch,
    _shown,
    _sniff,
    _unique,
    safe_name,
)

__all__ = ["unpack_zip"]

_DRIVE = re.compile(r"^[A-Za-z]:")
#: Upper bound of the bytes one entry of a zip's central directory may take (46 fixed
#: bytes plus name, extra field and comment); a larger directory is refused before
#: :mod:`zipfile` builds one object per entry.
_MAX_ENTRY_BYTES = 4096
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
# Errors that zipfile and its decompressors raise on corrupt or truncated archives (bz2
# raises OSError on bad data).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError)


def _directory_size(path: Path) -> tuple[int, int] | None:
    """``(entries, bytes)`` of a zip's central directory from its end record, or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        start = max(0, size - (_EOCD.size + 65535))
        f.seek(start)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _EOCD.size > len(tail):
            return None
        _, _, _, _, entries, cd_bytes, _, _ = _EOCD.unpack_from(tail, at)
        if (entries == 0xFFFF or cd_bytes == 0xFFFFFFFF) and at >= _ZIP64_LOCATOR.size:
            sig, _, offset, _ = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
            if sig == b"PK\x06\x07" and offset + _ZIP64_EOCD.size <= size:
                f.seek(offset)
                record = f.read(_ZIP64_EOCD.size)
                fields = _ZIP64_EOCD.unpack(record)
                if fields[0] == b"PK\x06\x06":
                    entries, cd_bytes = fields[7], fields[8]
    return entries, cd_bytes


def _too_many_entries(shown: str, n: int | str, limits: UploadLimits) -> UploadError:
    return UploadError(
        f"zip upload {shown} has {n} entries, more than the limit of {limits.max_members} "
        "(files and folders); zip only the NIfTI files, or upload them in several zips.",
        status=413,
    )


def _check_member_name(shown: str, name: str) -> None:
    """Refuse absolute names, drive letters and ``..`` parts (with / or \\ separators)."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified) or ".." in unified.split("/"):
        raise UploadError(
            f"zip upload {shown}: member {_shown(name)} is a path traversal (an absolute "
            "path, a drive letter or a '..' part), expected a name relative to the archive; "
            "zip the files again from their folder (e.g. cd scans && zip ../scans.zip *.nii).",
        )


def _members(zf: zipfile.ZipFile, shown: str, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The NIfTI members of an opened zip, after checking every entry of its directory."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise _too_many_entries(shown, len(infos), limits)
    for info in infos:  # unsafe names first, whatever else is wrong with the zip
        _check_member_name(shown, info.filename)
    members = []
    for info in infos:
        name = info.filename
        base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        if info.is_dir() or name.startswith("__MACOSX/") or base.startswith(".") or not base:
            continue
        member = f"zip upload {shown}: member {_shown(name)}"
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(
                f"{member} is a symbolic link, expected a regular file; zip the files "
                "themselves (zip without -y / --symlinks)."
            )
        if info.flag_bits & 0x1:
            raise UploadError(
                f"{member} is encrypted, expected an unencrypted zip; zip the files again "
                "without a password."
            )
        if not name.lower().endswith((".nii", ".nii.gz")):
            raise UploadError(
                f"{member} is not a NIfTI file, expected only .nii or .nii.gz files in the "
                "zip; remove the other files from the archive.",
                status=415,
            )
        members.append(info)
    if len(members) > limits.max_scans:
        raise UploadError(
            f"zip upload {shown} holds {len(members)} NIfTI files, more than the limit of "
            f"{limits.max_scans}; upload them in several zips.",
            status=413,
        )
    if not members:
        raise UploadError(
            f"zip upload {shown} holds no .nii or .nii.gz file ({len(infos)} entries, all "
            "folders or hidden files); zip the NIfTI files themselves."
        )
    declared = sum(info.file_size for info in members)
    if declared > limits.max_uncompressed_bytes:
        raise UploadError(
            f"zip upload {shown} would extract to {declared} bytes, more than the limit of "
            f"{limits.max_uncompressed_bytes}; upload fewer or smaller scans at a time.",
            status=413,
        )
    return members


def unpack_zip(path: Path, shown: str, workdir: Path, limits: UploadLimits) -> list[Scan]:
    directory = _directory_size(path)
    if directory is not None:
        entries, cd_bytes = directory
        if entries > limits.max_members:
            raise _too_many_entries(shown, entries, limits)
        if cd_bytes > limits.max_members * _MAX_ENTRY_BYTES:
            raise UploadError(
                f"zip upload {shown} has a central directory of {cd_bytes} bytes, more than "
                f"{limits.max_members} entries (the limit) can take; zip only the NIfTI "
                "files, without long comments, or upload them in several zips.",
                status=413,
            )
    try:
        zf = zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, struct.error) as exc:
        raise UploadError(
            f"zip upload {shown} is corrupt ({exc}); zip the files again and upload the "
            "complete archive."
        ) from None
    written: list[Path] = []
    try:
        with zf:
            members = _members(zf, shown, limits)
            return _extract(zf, members, shown, workdir, limits, written)
    except BaseException:
        for p in written:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        raise


@contextlib.contextmanager
def _reading(member: str) -> Iterator[None]:
    """Turn the errors of reading a zip member into :class:`UploadError` (400).

    Errors of writing the extracted file (a full disk) are the server's and pass through.
    """
    try:
        yield
    except (NotImplementedError, RuntimeError) as exc:
        raise UploadError(
            f"{member} cannot be extracted ({exc}); zip the files again with the standard "
            "(deflate) compression and no password."
        ) from None
    except _ZIP_ERRORS as exc:
        raise UploadError(
            f"{member} is corrupt ({exc}); zip the files again and upload the complete archive."
        ) from None


def _extract(
    zf: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    shown: str,
    workdir: Path,
    limits: UploadLimits,
    written: list[Path],
) -> list[Scan]:
    """Stream each member to ``workdir``, counting the bytes really written."""
    scans: list[Scan] = []
    seen: set[str] = set()
    total = 0
    index = 0
    for info in members:
        member = f"zip upload {shown}: member {_shown(info.filename)}"
        claimed = "nii.gz" if info.filename.lower().endswith(".nii.gz") else "nii"
        index, dest = _free_path(workdir, index, claimed)
        fd, name = tempfile.mkstemp(prefix=f".scan-{index:03d}.", suffix=".part", dir=workdir)
        tmp = Path(name)
        written.append(tmp)
        with os.fdopen(fd, "wb") as out:
            with _reading(member):
                src = zf.open(info)
            with src:
                while True:
                    with _reading(member):
                        chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limits.max_uncompressed_bytes:
                        raise UploadError(
                            f"{member}: the zip extracts to more than the limit of "
                            f"{limits.max_uncompressed_bytes} bytes (more than its directory "
                            "declares); upload fewer or smaller scans at a time.",
                            status=413,
                        )
                    out.write(chunk)
        found = _sniff(tmp, member)
        if found != claimed:
            raise _mismatch(member, claimed, found)
        os.replace(tmp, dest)
        written[-1] = dest
        scans.append(Scan(_unique(safe_name(info.filename), seen), dest))
        index += 1
    return scans
