"""A list of same-shaped tensors that moves to a temporary file once it outgrows a RAM budget.

Bidirectional propagation (`propagation.py`) holds a stretch of frames and of chroma between two
passes; a 2,000-frame stretch at 480p is gigabytes. Why plain file reads and writes and not
`np.memmap`: pages of a mapping count in the process's resident memory while they are mapped, so
a mapped buffer read end to end looks like (and, under pressure, competes like) RAM; explicit
`seek`/`readinto` keeps the process at one slot at a time, and the kernel's page cache, which it
can drop at will, does the rest. The file is anonymous (`tempfile.TemporaryFile`): it disappears
when closed, and on POSIX even if the process dies.

`ShotFrames` puts one shot's frames behind an index, buffering a stream in a `SpillBuffer`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .errors import InputError

log = logging.getLogger(__name__)

DEFAULT_RAM_LIMIT = 512 * 2**20    # bytes held in RAM per buffer before it spills to disk


class SpillBuffer:
    """Tensors of one shape and dtype, indexable like a list: in RAM up to `ram_limit` bytes, then
    all of them in a temporary file under `directory` (default: the system's temp folder).

    `append(t)` adds one (stored on the CPU); `buffer[i]` reads one back (a fresh CPU tensor);
    `buffer[i] = t` overwrites one. `what` names the contents in error messages. Close it (or use
    `with`) to free the file. Not thread-safe.
    """

    def __init__(self, *, ram_limit: int = DEFAULT_RAM_LIMIT, directory: str | Path | None = None,
                 what: str = "frames") -> None:
        if ram_limit < 0:
            raise InputError(f"ram_limit must be 0 or more bytes, got {ram_limit}.")
        self.ram_limit = ram_limit
        self.directory = Path(directory) if directory is not None else None
        self.what = what
        self._slots: list[Tensor] = []
        self._file = None
        self._count = 0
        self._shape: tuple[int, ...] | None = None
        self._dtype: torch.dtype | None = None
        self._slot_bytes = 0

    @property
    def spilled(self) -> bool:
        """Whether the contents live in the temporary file."""
        return self._file is not None

    @property
    def nbytes(self) -> int:
        """Bytes the contents take (in RAM or on disk)."""
        return self._count * self._slot_bytes

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(self._count):
            yield self[i]

    def append(self, tensor: Tensor) -> None:
        tensor = self._checked(tensor)
        self._count += 1
        if self._file is None and self.nbytes > self.ram_limit:
            self._spill()
        if self._file is None:
            self._slots.append(tensor)
        else:
            self._write(self._count - 1, tensor)

    def __getitem__(self, index: int) -> Tensor:
        index = self._index(index)
        if self._file is None:
            return self._slots[index].clone()
        data = bytearray(self._slot_bytes)
        self._file.seek(index * self._slot_bytes)
        if self._file.readinto(data) != self._slot_bytes:
            raise OSError(f"the spill file of {self.what} is shorter than written (slot {index}).")
        return torch.frombuffer(data, dtype=self._dtype).reshape(self._shape)

    def __setitem__(self, index: int, tensor: Tensor) -> None:
        index, tensor = self._index(index), self._checked(tensor)
        if self._file is None:
            self._slots[index] = tensor
        else:
            self._write(index, tensor)

    def close(self) -> None:
        self._slots = []
        if self._file is not None:
            self._file.close()
            self._file = None
        self._count = 0

    def __enter__(self) -> SpillBuffer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _index(self, index: int) -> int:
        if not -self._count <= index < self._count:
            raise IndexError(f"slot {index} of {self._count} {self.what}")
        return index % self._count

    def _checked(self, tensor: Tensor) -> Tensor:
        tensor = tensor.detach().to("cpu").contiguous()
        if self._shape is None:
            self._shape, self._dtype = tuple(tensor.shape), tensor.dtype
            self._slot_bytes = tensor.numel() * tensor.element_size()
        elif tuple(tensor.shape) != self._shape or tensor.dtype != self._dtype:
            raise InputError(f"{self.what} of different shapes or types in one stretch: {self._shape} "
                             f"{self._dtype} then {tuple(tensor.shape)} {tensor.dtype}; all frames of a video "
                             f"must have one size (resize them first).")
        return tensor

    def _spill(self) -> None:
        try:
            self._file = tempfile.TemporaryFile(dir=self.directory)   # noqa: SIM115 - closed by close()
        except OSError as e:
            raise InputError(f"cannot create a temporary file in {self.directory or tempfile.gettempdir()} to hold "
                             f"{self.what} ({e}); point spill_dir (or TMPDIR) to a writable folder.") from e
        log.info("%s exceed %d MiB of RAM: spilling to a temporary file", self.what, self.ram_limit >> 20)
        for i, slot in enumerate(self._slots):
            self._write(i, slot)
        self._slots = []

    def _write(self, index: int, tensor: Tensor) -> None:
        try:
            self._file.seek(index * self._slot_bytes)
            self._file.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
        except OSError as e:
            raise InputError(
                f"cannot write {self.what} to the temporary file ({e}); {self.nbytes / 2**20:.0f} MiB are needed "
                f"in {self.directory or tempfile.gettempdir()}: free disk space there or point spill_dir (or "
                f"TMPDIR) to a larger disk.") from e


class ShotFrames:
    """One shot's frames by index, read once: an indexed input (a `T x C x H x W` tensor, a list) is
    used in place; a stream is buffered in a `SpillBuffer` as far as it has been read, so the frames
    can be read again in any order (backward passes) without decoding backwards.

    `available(t)`: whether frame t exists (reads the stream up to it); `shot[t]`: frame t (after
    `available(t)`); `span(a, b)`: frames a..b-1 in order as far as they exist, read lazily;
    `rest(a)`: frames a, a+1, ... to the end (the part of a stream past what was buffered is passed
    through, not buffered). `buffer` makes the stream's buffer (closed by its owner)."""

    def __init__(self, frames, buffer: Callable[[str], SpillBuffer]) -> None:
        self.indexed = self.indexable(frames)
        self._frames = frames if self.indexed else buffer("buffered frames")
        self._stream: Iterator[Tensor] | None = None if self.indexed else iter(frames)

    @staticmethod
    def indexable(frames) -> bool:
        """Whether `frames` can be read by index (and so need no buffer)."""
        return isinstance(frames, (Tensor, Sequence, SpillBuffer))

    @property
    def read(self) -> int:
        """How many frames are known to exist (all of an indexed input; a stream's buffered ones)."""
        return len(self._frames)

    def available(self, t: int) -> bool:
        while self._stream is not None and len(self._frames) <= t:
            frame = next(self._stream, None)
            if frame is None:
                self._stream = None
                break
            self._frames.append(frame)
        return t < len(self._frames)

    def __getitem__(self, t: int) -> Tensor:
        return self._frames[t]

    def span(self, a: int, b: int) -> Iterator[Tensor]:
        for t in range(a, b):
            if not self.available(t):
                return
            yield self._frames[t]

    def rest(self, a: int) -> Iterator[Tensor]:
        t = a
        while t < len(self._frames):
            yield self._frames[t]
            t += 1
        if self._stream is not None:
            yield from self._stream
