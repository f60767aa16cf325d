"""Sample a process with py-spy while it works, and sum the samples by package.

py-spy's raw (collapsed) format is one `frame;frame;...;leaf count` line per distinct
stack; a sample is charged to the package of its innermost frame (self time), and also,
inclusively, to every package on its stack.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

FRAME_FILE = re.compile(r"\((?P<file>[^():]+)(?::\d+)?\)$")
# Longest match first: path fragment -> package.
PACKAGES = (
    ("/workgate/", "workgate"),
    ("/httpx", "httpx/httpcore/h11/anyio"),
    ("/httpcore", "httpx/httpcore/h11/anyio"),
    ("/h11/", "h11"),
    ("/httptools/", "httptools"),
    ("/anyio/", "httpx/httpcore/h11/anyio"),
    ("/lightkube/", "lightkube"),
    ("/aiohttp/", "aiohttp"),
    ("/yarl/", "aiohttp"),
    ("/multidict/", "aiohttp"),
    ("/yaml/", "yaml"),
    ("/kopf/", "kopf"),
    ("/pydantic", "pydantic"),
    ("/asyncio/", "asyncio"),
    ("/json/", "json"),
    ("/ssl.py", "ssl"),
    ("/subprocess.py", "subprocess"),
    ("/orjson", "orjson"),
    ("/logging/", "logging"),
    ("/copy.py", "copy (stdlib)"),
)


def package_of(frame: str) -> str:
    match = FRAME_FILE.search(frame.strip())
    path = "/" + match["file"] if match else frame
    for fragment, package in PACKAGES:
        if fragment in path:
            return package
    return "other" if match else frame.strip() or "other"


def record(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling `pid` until it exits or the returned process is interrupted."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "100",
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def function_of(frame: str) -> str:
    """`name (file.py:line)` -> `name (file.py)`: one entry per function."""
    frame = frame.strip()
    match = FRAME_FILE.search(frame)
    if not match:
        return frame or "other"
    name = frame[: match.start()].strip()
    return f"{name} ({match['file'].rsplit('/', 1)[-1]})"


def tally(raw: Path, label: Callable[[str], str]) -> tuple[Counter[str], Counter[str], int]:
    """Samples by `label(frame)`: self (innermost frame), inclusive (anywhere on the stack),
    and the total."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not frames or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        own[label(frames[-1])] += count
        for name in {label(f) for f in frames}:
            inclusive[name] += count
    return own, inclusive, total


def summarise_functions(raw: Path, top: int = 15) -> str:
    """The functions with the most samples, self (innermost frame) and inclusive."""
    if not raw.exists():
        return f"  (no profile at {raw})"
    own, inclusive, total = tally(raw, function_of)
    if not total:
        return "  (no samples)"
    lines = [f"  top functions, self / inclusive of {total} samples:"]
    for function, count in own.most_common(top):
        share, within = 100 * count / total, 100 * inclusive[function] / total
        lines.append(f"    {share:5.1f}%  {within:5.1f}%  {function[:90]}")
    return "\n".join(lines)


def summarise(raw: Path, top: int = 10) -> str:
    if not raw.exists():
        return f"  (no profile at {raw})"
    own, inclusive, total = tally(raw, package_of)
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; self (innermost frame) / inclusive by package:"]
    for package, count in own.most_common(top):
        share, within = 100 * count / total, 100 * inclusive[package] / total
        lines.append(f"    {package:28s} {share:5.1f}%  {within:5.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 12))
    print(summarise_functions(Path(sys.argv[1]), int(sys.argv[3]) if len(sys.argv) > 3 else 20))
