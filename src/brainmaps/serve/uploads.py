"""Checks of the files uploaded to ``brainmaps serve``, before any of them reaches the reader.

The server streams each upload into a private temporary folder under a name of its own;
:func:`unpack_upload` then checks it and returns its scans. The name the client sent is
used only for the extension check and, sanitised by :func:`safe_name`, for display: never
as a path. Zip members are never extracted under their own names either: each scan is
written as ``scan-NNN.nii`` or ``scan-NNN.nii.gz`` inside the work folder.

The kind of a file is decided twice, from its name (:func:`upload_kind`) and from its
content (:func:`sniff`, magic bytes only), and the two must agree. A zip is refused before
anything is extracted if its directory holds too many entries, unsafe member names
(absolute paths, ``..`` parts, drive letters), symbolic links, encrypted members, files
that are not NIfTI, or more declared bytes than allowed; while extracting, the bytes
actually written are counted too, since a zip's directory can lie.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from brainmaps.exceptions import BrainmapsError, ConfigError

__all__ = [
    "Scan",
    "UploadError",
    "UploadLimits",
    "safe_name",
    "sniff",
    "unpack_upload",
    "upload_kind",
]

#: Upload kinds, longest suffix first (``.nii.gz`` must be tested before ``.nii``).
_SUFFIXES = ((".nii.gz", "nii.gz"), (".nii", "nii"), (".zip", "zip"))
_ACCEPTED = "'.nii', '.nii.gz' or '.zip' (a zip of .nii / .nii.gz files)"
_WHAT = {
    "nii": "an uncompressed NIfTI file (.nii)",
    "nii.gz": "a gzip-compressed NIfTI file (.nii.gz)",
    "zip": "a zip archive (.zip)",
}
#: Bytes read from the start of a file (decompressed for gzip) to recognise a NIfTI header.
_HEAD = 544
_CHUNK = 2**20
_MAX_NAME = 100
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class UploadError(BrainmapsError):
    """A bad upload; ``status`` is the HTTP status to answer with.

    Parameters
    ----------
    message : str
        What is wrong, which file or member, and how to fix it.
    status : int
        HTTP status: 400 malformed (empty, corrupt, unsafe names), 413 too big (bytes,
        extracted size, number of entries or scans), 415 wrong type or content.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = int(status)


@dataclass(frozen=True)
class UploadLimits:
    """Size limits of one upload.

    Parameters
    ----------
    max_bytes : int
        Size of the upload as received (the server also checks it while streaming).
    max_scans : int
        NIfTI files in one zip.
    max_uncompressed_bytes : int
        Total bytes extracted from one zip (declared and actually written).
    max_members : int
        Entries of any kind in a zip's directory (folders and junk included).

    Raises
    ------
    ConfigError
        If a limit is not a positive integer.
    """

    max_bytes: int = 200 * 2**20
    max_scans: int = 10
    max_uncompressed_bytes: int = 2 * 2**30
    max_members: int = 100

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                unit = {"max_scans": "scans", "max_members": "entries"}.get(field.name, "bytes")
                raise ConfigError(
                    f"UploadLimits.{field.name} must be a positive integer, got {value!r}; "
                    f"give a whole number of {unit} of at least 1 (the default is "
                    f"{field.default})."
                )


@dataclass(frozen=True)
class Scan:
    """One checked scan of an upload.

    Parameters
    ----------
    name : str
        Display name: the base name of the upload or zip member, sanitised by
        :func:`safe_name` (unique within one upload).
    path : pathlib.Path
        Server-made path of the file inside the work folder, ending ``.nii`` or
        ``.nii.gz`` to match its content.
    """

    name: str
    path: Path


def _shown(name: str) -> str:
    """A user-given name for an error message: quoted, escaped, at most 200 characters."""
    return ascii(name if len(name) <= 200 else name[:200] + "...")


def _split_suffix(name: str) -> tuple[str, str]:
    """``("stem", ".nii.gz")`` for the accepted suffixes (any case), else ``(name, "")``."""
    lower = name.lower()
    for suffix, _ in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def safe_name(name: str) -> str:
    """The display name of an upload or zip member.

    Takes the base name (after the last ``/`` or ``\\``), replaces every character other
    than ``A-Z a-z 0-9 . _ -`` by ``_`` and leading dots by ``_`` (so the result is never
    ``.``, ``..`` or hidden), and cuts it to 100 characters, keeping a ``.nii``,
    ``.nii.gz`` or ``.zip`` suffix.

    Parameters
    ----------
    name : str
        The name the client sent (any text).

    Returns
    -------
    str
        A non-empty name safe to show (and even to use as a file name, though brainmaps
        never does).
    """
    base = re.split(r"[/\\]", str(name))[-1]
    clean = _UNSAFE_CHARS.sub("_", base)
    clean = re.sub(r"^\.+", lambda m: "_" * len(m.group()), clean)
    if not clean:
        return "upload"
    if len(clean) > _MAX_NAME:
        stem, suffix = _split_suffix(clean)
        clean = stem[: _MAX_NAME - len(suffix)] + suffix
    return clean


def upload_kind(filename: str) -> str:
    """The kind of an upload from the name the client gave it.

    Parameters
    ----------
    filename : str
        The client's file name (case does not matter).

    Returns
    -------
    str
        ``"nii"``, ``"nii.gz"`` or ``"zip"``.

    Raises
    ------
    UploadError
        415 if the name has none of these suffixes.
    """
    lower = str(filename).lower()
    for suffix, kind in _SUFFIXES:
        if lower.endswith(suffix):
            return kind
    raise UploadError(
        f"upload {_shown(str(filename))} has an unsupported file type, expected {_ACCEPTED}; "
        "convert the image to NIfTI (e.g. with dcm2niix or nibabel) or zip the NIfTI files.",
        status=415,
    )


def _is_nifti_header(head: bytes) -> bool:
    """Whether ``head`` starts with a NIfTI-1 or NIfTI-2 header (either byte order)."""
    if len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
        if head[:4] in (struct.pack("<i", 348), struct.pack(">i", 348)):
            return True
    if len(head) >= 8 and head[4:8] == b"n+2\0":
        if head[:4] in (struct.pack("<i", 540), struct.pack(">i", 540)):
            return True
    return False


def _describe(head: bytes) -> str:
    """A few words on what a file that is none of the accepted kinds looks like."""
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "a DICOM file"
    if head[:4] == struct.pack("<i", 348) or head[:4] == struct.pack(">i", 348):
        return "an Analyze / NIfTI-1 header without the NIfTI magic (b'n+1')"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"
    return "text"


def sniff(path: Path) -> str:
    """The kind of a file from its content (magic bytes only).

    Parameters
    ----------
    path : pathlib.Path
        The file on disk.

    Returns
    -------
    str
        ``"nii"`` (a NIfTI-1 header, magic ``n+1`` or ``ni1`` at byte 344 and
        ``sizeof_hdr`` 348, or a NIfTI-2 header, magic ``n+2`` at byte 4 and
        ``sizeof_hdr`` 540), ``"nii.gz"`` (gzip whose decompressed start is such a header)
        or ``"zip"`` (a zip local header or an empty zip).

    Raises
    ------
    UploadError
        400 if the file is empty; 415 if it is none of these, including a gzip file that
        is corrupt or does not hold a NIfTI header.
    """
    path = Path(path)
    return _sniff(path, f"file {path.name}")


def _sniff(path: Path, label: str) -> str:
    """:func:`sniff`, naming the file ``label`` in error messages."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if not head:
        raise UploadError(
            f"{label} is empty (0 bytes), expected a NIfTI image or a zip of them; upload "
            "the complete file."
        )
    if _is_nifti_header(head):
        return "nii"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(_HEAD)
        except (OSError, EOFError, zlib.error) as exc:
            raise UploadError(
                f"{label} is not a gzip-compressed NIfTI: the gzip data is corrupt "
                f"or truncated ({exc}); compress the .nii file again (e.g. gzip -k scan.nii) "
                "and upload the complete file.",
                status=415,
            ) from None
        if not _is_nifti_header(inner):
            raise UploadError(
                f"{label} is not a gzip-compressed NIfTI: the gzip data holds "
                f"{_describe(inner) if inner else 'nothing'}, expected a NIfTI-1 or NIfTI-2 "
                "header; upload a .nii.gz image.",
                status=415,
            )
        return "nii.gz"
    raise UploadError(
        f"{label} is {_describe(head)}, expected a NIfTI image (.nii, .nii.gz) or a "
        "zip of them; convert the image to NIfTI (e.g. with dcm2niix or nibabel).",
        status=415,
    )


def _free_path(workdir: Path, index: int, kind: str) -> tuple[int, Path]:
    """The first ``scan-NNN.<kind>`` from ``index`` on whose number is unused in workdir."""
    while (workdir / f"scan-{index:03d}.nii").exists() or (
        workdir / f"scan-{index:03d}.nii.gz"
    ).exists():
        index += 1
    return index, workdir / f"scan-{index:03d}.{kind}"


def _unique(name: str, seen: set[str]) -> str:
    """``name``, or ``stem-2.nii``, ``stem-3.nii``, ... if already in ``seen`` (then added)."""
    candidate, n = name, 1
    stem, suffix = _split_suffix(name)
    while candidate.lower() in seen:
        n += 1
        tail = f"-{n}{suffix}"
        candidate = stem[: _MAX_NAME - len(tail)] + tail
    seen.add(candidate.lower())
    return candidate


def _mismatch(what: str, claimed: str, found: str) -> UploadError:
    return UploadError(
        f"{what} is named as {_WHAT[claimed]} but its content is {_WHAT[found]}; rename it "
        f"to end .{found} or upload the file it should be.",
        status=415,
    )


def unpack_upload(
    path: Path,
    filename: str,
    workdir: Path,
    limits: UploadLimits = UploadLimits(),
) -> list[Scan]:
    """The scans of one upload, checked and placed in ``workdir``.

    Parameters
    ----------
    path : pathlib.Path
        The received file (a server-made name). A single NIfTI is moved into ``workdir``;
        a zip is left where it is.
    filename : str
        The name the client sent: used for the type check and, sanitised, for display.
    workdir : pathlib.Path
        The server's private folder; scans are written there as ``scan-NNN.nii`` or
        ``scan-NNN.nii.gz`` (the first numbers not yet used), through a temporary name.
    limits : UploadLimits
        Size limits.

    Returns
    -------
    list of Scan
        One scan for a NIfTI upload; the NIfTI members of a zip in the archive's order
        (folders, ``__MACOSX/`` entries and hidden files are skipped).

    Raises
    ------
    UploadError
        400 for an empty or corrupt file, unsafe member names (path traversal),
        symbolic links, encrypted members or a zip without NIfTI files; 413 for an upload
        larger than ``limits.max_bytes``, more than ``limits.max_members`` zip entries or
        ``limits.max_scans`` scans, or more than ``limits.max_uncompressed_bytes``
        extracted; 415 for a name or content that is not NIfTI or zip, or a name and a
        content that disagree. Whatever this call wrote in ``workdir`` is then removed.
    """
    path, workdir = Path(path), Path(workdir)
    shown = _shown(str(filename))
    claimed = upload_kind(filename)
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"upload {shown} is empty (0 bytes); upload the complete file.")
    if size > limits.max_bytes:
        raise UploadError(
            f"upload {shown} is {size} bytes, more than the limit of {limits.max_bytes}; "
            "upload fewer or smaller files at a time.",
            status=413,
        )
    found = _sniff(path, f"upload {shown}")
    if found != claimed:
        raise _mismatch(f"upload {shown}", claimed, found)
    workdir.mkdir(parents=True, exist_ok=True)
    if claimed != "zip":
        _, dest = _free_path(workdir, 0, claimed)
        _move(path, dest)
        return [Scan(safe_name(filename), dest)]
    from brainmaps.serve.zipped import unpack_zip  # zipped imports this module

    return unpack_zip(path, shown, workdir, limits)


def _move(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``: a rename, or a copy through a temporary name in dest's folder."""
    try:
        os.replace(src, dest)
        return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    src.unlink()
