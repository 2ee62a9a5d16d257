"""Fetching a file from the first mirror that answers, written atomically so a failed fetch leaves nothing behind."""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path


class DownloadError(ConnectionError, FileNotFoundError):
    """No mirror could deliver a file; the message says what was tried and how to supply the file by hand.

    Also a FileNotFoundError: to the caller it is a data file that is missing, reported like the others.
    """


def download_file(urls: Sequence[str], dest: Path, timeout: float = 30.0) -> str:
    """Save the first of ``urls`` that answers to ``dest`` and return that URL; raise DownloadError if none does."""
    errors = []
    # Unique to this process: DDP ranks on several nodes may fetch into one shared folder at once; each writes
    # its own file and the atomic rename leaves one whole copy.
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except (OSError, http.client.HTTPException) as err:
            errors.append(f"{url}: {err}")
            partial.unlink(missing_ok=True)
            continue
        os.replace(partial, dest)
        return url
    raise DownloadError(f"could not download {dest.name} (no network?); tried: " + "; ".join(errors))
