"""Dataset zips: unpacking an untrusted upload safely, and writing image + mask pairs as a zip.

Unpacking refuses what a hostile or broken zip can do: entries that climb out of the target folder
(`../`, absolute paths, drive letters), links, too many members, too many unpacked bytes (checked
against the declared sizes and again while writing, so a lying header cannot fill the disk), and
implausible compression ratios. Nested archives are left packed. Nothing is left behind on failure.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from retree_core.data import DataError, find_samples

CHUNK_BYTES = 1 << 20
SMALL_MEMBER_BYTES = 64 << 10  # members this small may compress better than max_ratio (the total may not)
EOCD = b"PK\x05\x06"  # the end-of-central-directory record, within the last 64 KiB + 22 bytes of a zip


def declared_entries(path: Path) -> int | None:
    """The entry count the zip's end record declares (65,535 stands for "more", as in ZIP64), read without
    parsing the central directory; None if no end record is found (ZipFile then says what is wrong)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(EOCD)
    return int.from_bytes(tail[at + 10:at + 12], "little") if at >= 0 and len(tail) >= at + 12 else None


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 10_000
    max_unpacked_bytes: int = 2 * 2**30
    max_ratio: float = 200.0  # unpacked / packed size of one member (PNG masks compress ~20-50x)


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a member may be written to, or None for directories and ignorable entries."""
    clean = name.replace("\\", "/")
    if clean.endswith("/"):
        return None
    parts = PurePosixPath(clean).parts
    if clean.startswith("/") or (parts and (":" in parts[0])) or ".." in parts:
        raise DataError(f"zip entry {name!r} points outside the archive; refusing the whole zip")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None  # hidden files and macOS resource forks
    return PurePosixPath(*parts)


def unpack_zip(zip_path: str | Path, dest: str | Path, limits: ZipLimits = ZipLimits()) -> Path:
    """Unpack `zip_path` into the new folder `dest` (removed again on any error) and return it."""
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        entries = declared_entries(zip_path)
        archive = None if entries is not None and entries > limits.max_members else zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{zip_path.name}: not a readable zip file ({exc})") from None
    if archive is None:  # refused from the end record, before the directory is read into memory
        raise DataError(f"{zip_path.name}: {entries}{'+' if entries == 0xFFFF else ''} entries, more than the "
                        f"{limits.max_members} allowed")
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with archive:
            members = archive.infolist()
            if len(members) > limits.max_members:
                raise DataError(f"{zip_path.name}: {len(members)} entries, more than the {limits.max_members} allowed")
            declared = sum(m.file_size for m in members)
            if declared > limits.max_unpacked_bytes:
                raise DataError(f"{zip_path.name}: unpacks to {declared / 2**20:.0f} MB, more than the "
                                f"{limits.max_unpacked_bytes / 2**20:.0f} MB allowed")
            packed = sum(m.compress_size for m in members)
            if declared > CHUNK_BYTES and declared > limits.max_ratio * max(packed, 1):
                raise DataError(f"{zip_path.name}: compressed {declared // max(packed, 1)}x in all, which looks "
                                "like a zip bomb")
            written = 0
            for member in members:
                rel = _safe_member_path(member.filename)
                if rel is None:
                    continue
                mode = member.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DataError(f"zip entry {member.filename!r} is a link; links are not accepted")
                if member.compress_size and member.file_size / member.compress_size > limits.max_ratio \
                        and member.file_size > SMALL_MEMBER_BYTES:
                    ratio = member.file_size // member.compress_size
                    raise DataError(f"zip entry {member.filename!r} is compressed {ratio}x, "
                                    "which looks like a zip bomb")
                target = dest.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(dest.resolve()):
                    raise DataError(f"zip entry {member.filename!r} points outside the archive")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as out:
                    while chunk := src.read(CHUNK_BYTES):
                        written += len(chunk)
                        if written > limits.max_unpacked_bytes:
                            raise DataError(f"{zip_path.name}: unpacks to more than the "
                                            f"{limits.max_unpacked_bytes / 2**20:.0f} MB allowed")
                        out.write(chunk)
    except DataError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise DataError(f"{zip_path.name}: damaged zip ({type(exc).__name__}: {exc})") from None
    return dest


def dataset_root(folder: str | Path) -> Path:
    """The folder holding a dataset in a known layout: `folder` itself or its only subfolder (zips
    often wrap everything in one top folder). Raises DataError describing what was found."""
    folder = Path(folder)
    try:
        find_samples(folder)
        return folder
    except DataError as first:
        subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subs) == 1:
            find_samples(subs[0])
            return subs[0]
        raise first


def write_pairs_zip(zip_path: str | Path, files: Iterable[tuple[str, bytes]]) -> Path:
    """Write (archive name, bytes) entries to `zip_path` atomically (a temporary file, then a rename)."""
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{zip_path.stem}.", suffix=".tmp", dir=zip_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in files:
                archive.writestr(name, data)
        os.replace(tmp, zip_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return zip_path


__all__ = ["ZipLimits", "unpack_zip", "dataset_root", "write_pairs_zip"]
