"""What TorchScript code may do when ``torch.jit.load`` runs it.

Loading a TorchScript archive compiles its ``code/`` sources and runs every ``__setstate__``
they define. TorchScript can call ``torch.from_file`` (read any file into a tensor, or map it
shared and so write it), ``torch.save`` (write any file) and the ops of whatever extension
libraries are loaded. :func:`check_torchscript_code` reads the sources (after the zip checks of
:mod:`._zip`) and refuses an archive that names any of these before it is loaded; the
quantized and xnnpack ops and classes real models use stay allowed.
"""
from __future__ import annotations

import re
import zipfile

from ..errors import ReadError

_FORBIDDEN = re.compile(
    r"\bfrom_file\b"  # aten::from_file: read (or with shared=True write) any file
    r"|(?:\btorch|\baten|\bgetattr\s*\([^)]*)\s*[.,]\s*['\"]?save\b"  # aten::save writes files
    r"|['\"]save['\"]"
    r"|\bload_tensor\b|\bdebugprims\b"
    r"|(?<![\w.])ops\s*\.\s*(?!(?:aten|prim|quantized|_quantized|quantized_decomposed)\b)\w+"
    r"|\btorch\s*\.\s*classes\s*\.\s*(?!(?:quantized|xnnpack)\b)\w+")


def check_torchscript_code(path, z: zipfile.ZipFile, limit: int = 64 << 20) -> None:
    """Refuse a TorchScript archive whose code could touch files (see the module doc)."""
    total = 0
    for info in z.infolist():
        parts = info.filename.split("/")
        if "code" not in parts[:-1] or not info.filename.endswith(".py"):
            continue
        total += info.file_size
        if total > limit:
            raise ReadError(path, f"refusing TorchScript archive: over {limit >> 20} MiB of code")
        text = z.read(info).decode("utf-8", "replace")
        m = _FORBIDDEN.search(text)
        if m:
            line = text.count("\n", 0, m.start()) + 1
            raise ReadError(path, f"refusing TorchScript archive: {info.filename} line {line} "
                                  f"uses {m.group(0).strip()!r}, which can read or write other "
                                  "files when torch loads it; filterdb reads nothing outside "
                                  "the given file")
