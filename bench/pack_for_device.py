"""Prepare .whl/av.tar.xz, the PyAV that bench/gpu_check.py's film section needs on the GPU machine.

    python bench/pack_for_device.py [--av 18.1.0]

The device tool's machines have no PyAV and no network. A wheel can travel with the working tree
(`carry: [".whl"]`, ignored by git), but the tree and what it carries must stay within 64 MiB, the
repository alone is about 36 MB, and the PyAV wheel 36 MB. Its contents repacked with xz are about
25 MB, so it fits. The device command unpacks it into /tmp/site and puts that on PYTHONPATH (the
command is in bench/RESULTS.md, issue 22). Prints the size of what would travel and fails above the
limit. Needs pip and network access here (PyPI).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20
# The device machines run CPython 3.12 on x86-64 Linux (see the device tool's KINDS.md).
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:", "--no-deps",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64"]


def travelling_bytes() -> int:
    """Bytes of the tracked and the untracked-but-not-ignored files, plus .whl: what a device call sends."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    files = [REPO / name.decode() for name in listed if name]
    extra = [p for p in (REPO / ".whl").rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files + extra if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--av", default="18.1.0", help="PyAV version (requirements.txt asks for >= 14.2)")
    args = parser.parse_args()
    target = REPO / ".whl" / "av.tar.xz"
    target.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", *PLATFORM, "-d", tmp, f"av=={args.av}"],
                       check=True)
        (wheel,) = Path(tmp).glob("av-*.whl")
        unpacked = Path(tmp) / "site"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(unpacked)
        partial = target.with_suffix(".part")
        with tarfile.open(partial, "w:xz", preset=9) as tar:
            for path in sorted(unpacked.iterdir()):
                tar.add(path, arcname=path.name)
        partial.replace(target)
        print(f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB -> {target} {target.stat().st_size / 1e6:.1f} MB")
    total = travelling_bytes()
    print(f"the working tree with .whl: {total / 2**20:.1f} MiB of the device tool's {LIMIT / 2**20:.0f} MiB")
    if total > LIMIT:
        print("too large: the call would be refused; remove other untracked files or carry less", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
