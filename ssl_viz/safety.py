"""Input from browser users, who may be anyone: typed paths and uploaded zips.

* :func:`resolve_user_path` lets a path typed in the app name only what lies under the
  configured **data roots**: ``$SSL_VIZ_DATA_ROOTS`` (folders separated by ``os.pathsep``;
  set but empty: typed paths are refused, only uploads remain), by default the uploads
  folder (:func:`ssl_viz.paths.uploads_dir`) and ``~/ssl-viz-data``. ``..`` and symbolic
  links are followed first and the *real* path must stay under a root, and a folder must
  hold no symbolic link leading out of the roots (else the image loader would read it).
* :func:`open_checked` opens a file **once**, following no link, and checks *what was opened*: a file swapped
  for a link after a path check cannot lead out of the roots (the app: :func:`confine_reads`, :func:`open_data_file`).
* :func:`extract_zip` unpacks an uploaded zip of images under ``dest_root/<sha256 prefix>/``
  with limits on its size, its total uncompressed size, its number of entries and its
  compression ratio, and refuses absolute paths, ``..``, symbolic links and special files:
  nothing is written outside that folder.

The command line does not go through here: it runs as the local user, on the user's own
files, and accepts any path. Limits can be changed by environment variables
(``SSL_VIZ_MAX_ZIP_MB``, ``SSL_VIZ_MAX_UNZIPPED_MB``, ``SSL_VIZ_MAX_ZIP_FILES``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ssl_viz.data.base import DatasetError
from ssl_viz.paths import uploads_dir

DATA_ROOTS_ENV = "SSL_VIZ_DATA_ROOTS"
DEFAULT_DATA_DIR = "ssl-viz-data"          # under the home folder
MAX_TREE_ENTRIES = 2_000_000                # a typed folder is walked once to look for escaping links (2M entries: a few seconds)
MAX_RATIO = 200                             # uncompressed / compressed, per entry over RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1 << 20
CHUNK = 1 << 20


class UnsafeInputError(DatasetError):
    """A path or an upload is refused; the message says why (shown as is to the user)."""


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def max_zip_bytes() -> int:
    """Largest zip accepted (``$SSL_VIZ_MAX_ZIP_MB``, default 200 MB, as ``server.maxUploadSize``)."""
    return _env_int("SSL_VIZ_MAX_ZIP_MB", 200) << 20


def max_unzipped_bytes() -> int:
    """Largest total uncompressed size (``$SSL_VIZ_MAX_UNZIPPED_MB``, default 2048 MB)."""
    return _env_int("SSL_VIZ_MAX_UNZIPPED_MB", 2048) << 20


def max_zip_files() -> int:
    """Most entries in a zip (``$SSL_VIZ_MAX_ZIP_FILES``, default 50000)."""
    return _env_int("SSL_VIZ_MAX_ZIP_FILES", 50_000)


# ----------------------------------------------------------------------------- typed paths


def default_data_roots() -> list[Path]:
    return [uploads_dir(), Path.home() / DEFAULT_DATA_DIR]


def data_roots() -> list[Path]:
    """The folders a typed path may point into, as real (symlink-free) absolute paths."""
    env = os.environ.get(DATA_ROOTS_ENV)
    roots = default_data_roots() if env is None else [Path(p.strip()).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return [Path(os.path.realpath(r)) for r in roots]


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _roots_text(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots) if roots else "none (typed paths are off; upload a zip instead)"


def resolve_user_path(text: str, roots: list[Path] | None = None, check_links: bool = True) -> Path:
    """The real path named by ``text`` if it lies under a data root, else :class:`UnsafeInputError`.

    A relative path is taken relative to each root in turn (the first where it exists).
    ``..`` and symbolic links are resolved before the check; for a folder, every symbolic
    link inside it must also lead into a root (``check_links``). Whether a path outside
    the roots exists is never revealed.
    """
    roots = data_roots() if roots is None else [Path(os.path.realpath(r)) for r in roots]
    text = (text or "").strip()
    if not text:
        raise UnsafeInputError("type the path of a folder of images")
    if "\x00" in text:
        raise UnsafeInputError("the path contains a NUL character")
    if not roots:
        raise UnsafeInputError(f"typed paths are turned off on this server ({DATA_ROOTS_ENV} is empty); upload a zip of images instead")
    given = Path(text).expanduser()
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    resolved = [Path(os.path.realpath(c)) for c in candidates]
    inside = [r for r in resolved if _under(r, roots)]
    if not inside:
        raise UnsafeInputError(f"{text} is outside the data folders this server may read ({_roots_text(roots)}); "
                               f"put your images there, or set {DATA_ROOTS_ENV}")
    path = next((r for r in inside if r.exists()), inside[0])
    if not path.exists():
        raise UnsafeInputError(f"{text} does not exist (data folders: {_roots_text(roots)})")
    if check_links and path.is_dir():
        check_tree(path, roots)
    return path


def check_tree(folder: Path, roots: list[Path] | None = None, max_entries: int = MAX_TREE_ENTRIES) -> None:
    """Refuse a folder that holds a symbolic link leading outside ``roots`` (or too many entries to check).

    One ``scandir`` pass (no extra system call per file); symlinked folders are checked, not entered.
    """
    roots = data_roots() if roots is None else roots
    seen, stack = 0, [str(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries:
                        raise UnsafeInputError(f"{folder} holds more than {max_entries} files and folders; pick a smaller folder")
                    if entry.is_symlink():
                        if not _under(Path(os.path.realpath(entry.path)), roots):
                            rel = os.fsencode(Path(entry.path).relative_to(folder)).decode("utf-8", "backslashreplace")
                            raise UnsafeInputError(f"{rel} in {folder} is a symbolic link leading outside the data folders; "
                                                   "copy the files in instead of linking them")
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue  # unreadable or gone: the image loader reports what it cannot read


# ----------------------------------------------------------------------------- reading what was checked

READ_ROOTS_ENV = "SSL_VIZ_READ_ROOTS"   # set by the app for the training processes it starts


def _env_read_roots() -> list[Path] | None:
    value = os.environ.get(READ_ROOTS_ENV)
    return None if value is None else [Path(os.path.realpath(p)) for p in value.split(os.pathsep) if p]


_READ_ROOTS: list[Path] | None = _env_read_roots()   # None: reads are not confined (the command line)


def _opened_path(fd: int, path: str | os.PathLike) -> Path | None:
    """The real path of the file open as ``fd``: ``/proc/self/fd/N`` where it exists, else ``path``'s real path
    provided it is the very file that is open (same device and inode); None when neither can be told."""
    link = f"/proc/self/fd/{fd}"
    if os.path.islink(link):
        try:
            return Path(os.readlink(link))
        except OSError:
            pass
    real = os.path.realpath(path)
    try:
        opened, named = os.fstat(fd), os.stat(real, follow_symlinks=False)
    except OSError:
        return None
    return Path(real) if (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino) else None


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_LINK_ERRORS = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)   # what O_NOFOLLOW / O_DIRECTORY answer to a link


def _open_beneath(root: Path, parts: tuple[str, ...], flags: int) -> int:
    """Open ``root/parts...`` one component at a time, each relative to the previous folder's descriptor and
    without following a symbolic link anywhere (``O_NOFOLLOW``); returns the descriptor of the last one."""
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    try:
        for part in parts[:-1]:
            sub = os.open(part, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = sub
        return os.open(parts[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)


def open_checked(path: str | os.PathLike, roots: list[Path] | None = None) -> io.BufferedReader:
    """Open the regular file ``path`` for reading if what is opened lies under a data root; a binary file object.

    ``path`` is resolved (``..``, the links there are now) and must lie under ``roots`` (default :func:`data_roots`);
    the file is then opened **once**, from the root down, following no link (``O_NOFOLLOW`` on every component,
    ``O_NONBLOCK`` against FIFOs), and checked on its descriptor: a regular file whose real path (``/proc/self/fd``,
    or the same device and inode as the checked path) lies under the roots. A link swapped in is refused, never followed.

    Raises:
        UnsafeInputError: outside the roots, not a regular file, or changed into a link while being opened.
        OSError: the file cannot be opened (missing, unreadable).
    """
    roots = data_roots() if roots is None else [Path(os.path.realpath(r)) for r in roots]
    name = os.fsdecode(path)
    real = Path(os.path.realpath(path))
    root = next((r for r in roots if _under(real, [r])), None)
    if root is None:
        raise UnsafeInputError(f"{name} is outside the data folders this server may read ({_roots_text(roots)})")
    flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC
    parts = real.relative_to(root).parts
    try:
        if parts and os.open in os.supports_dir_fd:
            fd = _open_beneath(root, parts, flags)
        else:
            fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno in _LINK_ERRORS:
            raise UnsafeInputError(f"{name} changed into a symbolic link while being opened; it is not read") from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeInputError(f"{name} is not a regular file; it is not read")
        opened = _opened_path(fd, real)
        if opened is None or not _under(opened, roots):
            raise UnsafeInputError(f"{name} leads outside the data folders this server may read ({_roots_text(roots)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def confine_reads(roots: list[Path] | None) -> None:
    """From now on, :func:`open_data_file` in this process opens a file named under ``roots`` only if what it opens
    lies under them too (None: no confinement). The app calls it with the data roots and the uploads folder and
    hands them to the training processes it starts (``$SSL_VIZ_READ_ROOTS``); the command line never does."""
    global _READ_ROOTS
    _READ_ROOTS = None if roots is None else [Path(os.path.realpath(r)) for r in roots]


def read_roots() -> list[Path] | None:
    """The roots :func:`confine_reads` set (None: reads are not confined)."""
    return _READ_ROOTS


def open_data_file(path: str | os.PathLike) -> io.BufferedReader:
    """A dataset file opened for reading. When this process confines its reads (:func:`confine_reads`: the app) and
    ``path`` is named under a data root (as every path typed in the app is), :func:`open_checked`: what is opened
    must lie under the roots too. Otherwise a plain ``open(path, "rb")`` (the command line: your own files; a
    folder the server's owner configured outside the roots)."""
    roots = _READ_ROOTS
    if roots is None or not _under(Path(os.path.abspath(path)), roots):
        return open(path, "rb")
    return open_checked(path, roots)


# ----------------------------------------------------------------------------- zip uploads


def _source(file) -> tuple[io.BufferedIOBase, bool]:
    """A seekable binary stream over ``file`` (path, bytes or file-like) and whether we must close it."""
    if isinstance(file, (str, os.PathLike)):
        return open(file, "rb"), True
    if isinstance(file, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(file)), True
    if hasattr(file, "read") and hasattr(file, "seek"):
        return file, False
    raise UnsafeInputError(f"cannot read a zip from a {type(file).__name__}")


def _safe_member(name: str) -> PurePosixPath | None:
    """The relative path an entry may be written to; None to skip it; UnsafeInputError when it would leave the folder."""
    if "\x00" in name:
        raise UnsafeInputError(f"entry {name!r} has a NUL character in its name")
    posix = name.replace("\\", "/")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":" and posix[0].isalpha()):
        raise UnsafeInputError(f"entry {name} has an absolute path")
    if ".." in parts:
        raise UnsafeInputError(f"entry {name} has a '..' path that would leave the upload folder")
    if not parts or parts[0] == "__MACOSX":
        return None
    return PurePosixPath(*parts)


def _check_entries(zf: zipfile.ZipFile, size: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = zf.infolist()
    if len(infos) > max_zip_files():
        raise UnsafeInputError(f"the zip has {len(infos)} entries, more than the limit of {max_zip_files()}")
    total = sum(i.file_size for i in infos)
    if total > max_unzipped_bytes():
        raise UnsafeInputError(f"the zip would unpack to {total / 2**20:.0f} MB, more than the limit of "
                               f"{max_unzipped_bytes() >> 20} MB (zip bomb guard)")
    if size and total > MAX_RATIO * max(size, RATIO_MIN_BYTES):
        raise UnsafeInputError(f"the zip would unpack to {total / max(size, 1):.0f} times its size (zip bomb guard)")
    chosen = []
    for info in infos:
        rel = _safe_member(info.filename)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if info.create_system == 3 and kind == stat.S_IFLNK:  # 3: Unix
            raise UnsafeInputError(f"entry {info.filename} is a symbolic link; links are not extracted")
        if info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeInputError(f"entry {info.filename} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise UnsafeInputError(f"entry {info.filename} is encrypted; upload an unencrypted zip")
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise UnsafeInputError(f"entry {info.filename} would unpack to {info.file_size // max(info.compress_size, 1)} "
                                   "times its compressed size (zip bomb guard)")
        if rel is not None:
            chosen.append((info, rel))
    return chosen


def _extract_into(zf: zipfile.ZipFile, entries: list[tuple[zipfile.ZipInfo, PurePosixPath]], target: Path) -> None:
    budget = max_unzipped_bytes()
    real_target = Path(os.path.realpath(target))
    for info, rel in entries:
        out = target.joinpath(*rel.parts)
        if not Path(os.path.realpath(out)).is_relative_to(real_target):  # belt and braces: nothing lands outside
            raise UnsafeInputError(f"entry {info.filename} would be written outside the upload folder")
        if info.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with zf.open(info) as src, open(out, "xb") as dst:  # x: a duplicate entry never overwrites
            while chunk := src.read(CHUNK):
                written += len(chunk)
                budget -= len(chunk)
                if written > info.file_size or budget < 0:
                    raise UnsafeInputError(f"entry {info.filename} unpacks to more than it declares (zip bomb guard)")
                dst.write(chunk)
        os.chmod(out, 0o644)


def dataset_folder(extracted: Path) -> Path:
    """The folder to load: ``extracted``, or its only visible sub-folder when a zip wrapped everything in one."""
    visible = [p for p in extracted.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(visible) == 1 and visible[0].is_dir() and not visible[0].is_symlink():
        return visible[0]
    return extracted


def extract_zip(file, dest_root: str | os.PathLike | None = None) -> Path:
    """Unpack a zip of images under ``dest_root/<sha256[:16]>/`` and return the folder to load as ``folder:PATH``.

    ``file`` is a path, bytes, or a seekable binary file (a Streamlit ``UploadedFile``).
    The same zip twice is unpacked once. Raises :class:`UnsafeInputError` for a zip
    that is too large, a zip bomb, an unsafe entry (absolute, ``..``, link, special file,
    encrypted, duplicate) or not a zip at all; then nothing is left behind.
    """
    dest_root = Path(dest_root) if dest_root is not None else uploads_dir() / "datasets"
    fh, close = _source(file)
    try:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size > max_zip_bytes():
            raise UnsafeInputError(f"the zip is {size / 2**20:.0f} MB, more than the limit of {max_zip_bytes() >> 20} MB")
        fh.seek(0)
        digest = hashlib.sha256()
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
        final = dest_root / digest.hexdigest()[:16]
        if final.is_dir():
            return dataset_folder(final)
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise UnsafeInputError(f"not a readable zip file ({exc})") from exc
        with zf:
            entries = _check_entries(zf, size)
            if not any(not info.is_dir() for info, _ in entries):
                raise UnsafeInputError("the zip holds no files")
            dest_root.mkdir(parents=True, exist_ok=True)
            tmp = dest_root / f".extract-{final.name}-{secrets.token_hex(4)}"
            tmp.mkdir()
            try:
                _extract_into(zf, entries, tmp)
            except UnsafeInputError:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            except FileExistsError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise UnsafeInputError(f"the zip holds the same name twice ({Path(exc.filename).name})") from exc
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OSError) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise UnsafeInputError(f"cannot unpack the zip: {exc}") from exc
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        try:
            os.replace(tmp, final)  # atomic: a half-unpacked zip is never used
        except OSError:  # the same zip was unpacked meanwhile by another session
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.is_dir():
                raise
        return dataset_folder(final)
    finally:
        if close:
            fh.close()


def is_uploaded_dataset(path: str | os.PathLike, dest_root: str | os.PathLike | None = None) -> bool:
    """Whether ``path`` lies in the folder where :func:`extract_zip` unpacks."""
    root = Path(os.path.realpath(Path(dest_root) if dest_root is not None else uploads_dir() / "datasets"))
    return Path(os.path.realpath(path)).is_relative_to(root)
