"""Weights: an explicit path, else the cache (``$POSEKIT_HOME``, default ``~/.cache/posekit``), else a download.

Downloads stream to a temporary file in the cache folder (tqdm progress bar on stderr) while the sha256 is
computed; the hash (full ``sha256`` or ``sha256_prefix``) is checked before anything is renamed into place, so a
bad or partial download never lands in the cache. Zip archives (OpenMMLab SDK bundles) are opened and their
ONNX member (``end2end.onnx`` by default) is extracted to the cache file name. Every failure raises an error that
says which URL failed and which file to put where.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

from posekit.runtime.cards import ModelCard, WeightsSpec

__all__ = ["posekit_home", "resolve_weights", "download_file", "sha256_file", "DownloadError"]


class DownloadError(RuntimeError):
    """A download that failed (network, HTTP status, hash mismatch, bad archive)."""


def posekit_home() -> Path:
    """The weight cache folder: ``$POSEKIT_HOME`` or ``~/.cache/posekit``."""
    env = os.environ.get("POSEKIT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "posekit"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _manual_hint(url: str | None, dest: Path, member: str | None) -> str:
    what = f"the '{member}' inside {url}" if member and url else (url or dest.name)
    return f"download {what} yourself and save it as {dest}, or pass the file with --weights PATH / weights=PATH"


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    archive_member: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically; for a zip, extract ``archive_member`` (default: ``end2end.onnx``,
    else the only ``.onnx``) to ``dest``. The hash is that of the downloaded file (the archive for a zip).

    Raises:
        DownloadError: naming the URL, the reason and where to put the file by hand.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = _manual_hint(url, dest, archive_member or ("end2end.onnx" if url.endswith(".zip") else None))
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    out = os.fdopen(fd, "wb")
    try:
        h = hashlib.sha256()
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "posekit"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                from tqdm import tqdm

                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                          disable=not progress, file=sys.stderr, leave=False) as bar:
                    while True:
                        block = resp.read(1 << 16)
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as e:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}; {hint}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"download of {url} failed ({reason}; offline?); {hint}") from None
        digest = h.hexdigest()
        if sha256 and digest != sha256.lower():
            raise DownloadError(f"download of {url}: sha256 mismatch (expected {sha256}, got {digest}); "
                                f"the file was not kept; {hint}")
        if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
            raise DownloadError(f"download of {url}: sha256 {digest} does not start with {sha256_prefix}; "
                                f"the file was not kept; {hint}")
        if not sha256 and not sha256_prefix:
            warnings.warn(f"{url}: no sha256 in the model card, the download is not verified (sha256 {digest})",
                          stacklevel=2)
        if zipfile.is_zipfile(tmp):
            _extract_member(tmp, dest, archive_member, url, hint)
        else:
            os.replace(tmp, dest)
        return dest
    finally:
        out.close()
        if tmp.exists():
            tmp.unlink()


def _extract_member(archive: Path, dest: Path, member: str | None, url: str, hint: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        if member:
            hits = [n for n in names if n == member or n.rsplit("/", 1)[-1] == member]
        else:
            hits = [n for n in names if n.rsplit("/", 1)[-1] == "end2end.onnx"] or [
                n for n in names if n.endswith(".onnx")]
        if len(hits) != 1:
            raise DownloadError(f"{url}: the archive holds {names[:10]}; expected exactly one "
                                f"{member or 'end2end.onnx / .onnx'} member; {hint}")
        fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
        try:
            with zf.open(hits[0]) as src, os.fdopen(fd, "wb") as out:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
            os.replace(tmp_name, dest)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)


def resolve_weights(
    card: ModelCard | WeightsSpec,
    weights: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The local ONNX file for a card: ``weights`` if given, else the card's ``path`` if it exists, else the cache
    file ``$POSEKIT_HOME/<file>``, else a download of the card's URL into the cache.

    Raises:
        FileNotFoundError: an explicit file that does not exist, or no file and no URL (the message says which
            file to put where).
        DownloadError: the download failed (offline, HTTP error, hash mismatch).
    """
    spec = card.weights if isinstance(card, ModelCard) else card
    label = f"model card '{card.name}'" if isinstance(card, ModelCard) else "weights"
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"weights file not found: {p}")
        return p
    if spec.path and Path(spec.path).expanduser().is_file():
        return Path(spec.path).expanduser()
    cached = posekit_home() / spec.cache_name
    if cached.is_file():
        return cached
    if spec.url and download:
        return download_file(spec.url, cached, sha256=spec.sha256, sha256_prefix=spec.sha256_prefix,
                             archive_member=spec.archive_member, progress=progress)
    where = f"{spec.path} does not exist; " if spec.path else ""
    how = f"it downloads from {spec.url} when online; " if spec.url else "it has no download URL; "
    raise FileNotFoundError(
        f"{label}: weights not found ({where}{how}put {spec.cache_name} in {cached.parent} "
        f"(or set POSEKIT_HOME), or pass --weights PATH)"
    )
