"""Reading frames of a clip: a video file (decord first, PyAV where decord fails) or a frame folder.

decord seeks straight to the wanted frames; PyAV is the fallback for what decord cannot open or
index (AV1, some webm, broken indices) and decodes sequentially up to the last wanted frame.
Frame folders (``<clip_id>/img_00001.jpg`` ...) are read with PIL; frames already decoded into a uint8
(T, H, W, 3) array (the Python API) are an ArrayClip. Every failure is a ClipError whose message is the
reason stored in the cache's /failures.
"""
import os

import numpy as np

from m3net.data.datasets import frame_files
from m3net.errors import ClipError  # noqa: F401 (re-exported)


def _check_file(path):
    if path is None or not os.path.exists(path):
        raise ClipError(f"missing: {path or 'no video file or frame folder found under --root'}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ClipError(f"empty file (0 bytes): {path}")


class _DecordReader:
    def __init__(self, path):
        import decord

        self.reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        self.count = len(self.reader)

    def read(self, indices):
        return self.reader.get_batch(list(indices)).asnumpy()


class _PyAVReader:
    def __init__(self, path):
        import av

        self.path = path
        with av.open(path) as container:
            if not container.streams.video:
                raise ClipError(f"not a video: {path} has no video stream")
            stream = container.streams.video[0]
            # Container frame counts are absent (webm) or wrong often enough: count packets.
            self.count = sum(1 for p in container.demux(stream) if p.size > 0)

    def read(self, indices):
        import av

        wanted = sorted(set(indices))
        got = {}
        last = None
        with av.open(self.path) as container:
            for position, frame in enumerate(container.decode(video=0)):
                last = frame.to_ndarray(format="rgb24")
                if position in wanted:
                    got[position] = last
                if position >= wanted[-1]:
                    break
        if last is None:
            raise ClipError(f"no frames: PyAV decoded nothing from {self.path}")
        # Fewer decodable frames than packets: the last decoded frame stands in for the rest.
        return np.stack([got.get(i, last) for i in indices])


class _FrameFolderReader:
    def __init__(self, path):
        self.files = frame_files(path)
        self.count = len(self.files)

    def read(self, indices):
        from PIL import Image

        frames = []
        for i in indices:
            try:
                with Image.open(self.files[i]) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except OSError as err:
                raise ClipError(f"unreadable frame {self.files[i]}: {err}") from err
        if len({f.shape for f in frames}) > 1:
            raise ClipError(f"frames of different sizes in {os.path.dirname(self.files[0])}")
        return np.stack(frames)


class Clip:
    """An opened clip: ``len(clip)`` frames, ``clip.read(indices)`` -> uint8 (T, H, W, 3)."""

    def __init__(self, path, backend="auto"):
        _check_file(path)
        self.path = path
        if os.path.isdir(path):
            self.backend, self._reader = "frames", _FrameFolderReader(path)
        else:
            self.backend, self._reader = self._open_video(path, backend)
        if self._reader.count == 0:
            raise ClipError(f"no frames: {path}")

    def _open_video(self, path, backend):
        errors = []
        names = ("decord", "pyav") if backend == "auto" else (backend,)
        for name in names:
            try:
                return name, (_DecordReader if name == "decord" else _PyAVReader)(path)
            except ClipError:
                raise
            except Exception as err:  # decord and PyAV raise their own, unrelated error types
                errors.append(f"{name}: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}")
        raise ClipError(f"not a readable video: {path} ({'; '.join(errors)})")

    def __len__(self):
        return self._reader.count

    def read(self, indices):
        indices = [int(i) for i in indices]
        try:
            frames = self._reader.read(indices)
        except ClipError:
            raise
        except Exception as err:
            if self.backend != "decord":
                raise ClipError(f"decoding failed ({self.backend}): {self.path}: {err}") from err
            # decord opened the file but cannot seek/decode it: decode it again with PyAV.
            self.backend, self._reader = "pyav", _PyAVReader(self.path)
            frames = self._reader.read([min(i, self._reader.count - 1) for i in indices])
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != len(indices):
            raise ClipError(f"decoded frames of shape {frames.shape} from {self.path}, expected (T, H, W, 3)")
        return np.ascontiguousarray(frames, dtype=np.uint8)  # (T, H, W, 3)


class ArrayClip:
    """A clip already decoded into uint8 (T, H, W, 3) RGB frames, read like ``Clip``: a path and its
    frames decoded into an array give the same sampled frames."""

    def __init__(self, frames):
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not frames.shape[0]:
            raise ClipError(f"expected uint8 frames of shape (T, H, W, 3) with T >= 1, got {frames.dtype} "
                            f"{frames.shape}")
        self.backend, self.frames = "array", frames

    def __len__(self):
        return len(self.frames)

    def read(self, indices):
        return np.ascontiguousarray(self.frames[[int(i) for i in indices]])  # (T, H, W, 3)


def open_clip(source):
    """A ``Clip`` for a path (video file or frame folder), an ``ArrayClip`` for decoded frames."""
    if isinstance(source, np.ndarray):
        return ArrayClip(source)
    return Clip(None if source is None else os.fspath(source))


def num_frames(path, backend="auto"):
    return len(Clip(path, backend))


def decode_frames(path, indices, backend="auto"):
    """uint8 (T, H, W, 3) RGB frames ``indices`` of the clip at ``path``."""
    return Clip(path, backend).read(indices)
