"""Reading frames of a clip: a video file (decord first, PyAV where decord fails) or a frame folder.

decord seeks straight to the wanted frames; PyAV is the fallback for what decord cannot open or
index (AV1, some webm, broken indices) and decodes sequentially up to the last wanted frame.
Frame folders (``<clip_id>/img_00001.jpg`` ...) are read with PIL; their frame numbers must run
without a gap (a missing image would shift every later frame onto another frame index). Frames already
decoded into a uint8 (T, H, W, 3) array (the Python API) are an ArrayClip. Every failure is a ClipError
whose message is the reason stored in the cache's /failures.
"""
import os

import numpy as np

from m3net.data.datasets import frame_files
from m3net.errors import ClipError  # noqa: F401 (re-exported)

# mmaction2 / TSN rawframes keep optical flow (flow_x_00001.jpg, ...) beside the RGB frames.
RGB_PREFIX = "img_"


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

    def frames(self):
        """Every frame in order, one decoding pass; as ``read``, the last decoded frame stands in for
        packets that decode to nothing."""
        import av

        last, position = None, 0
        with av.open(self.path) as container:
            for frame in container.decode(video=0):
                if position == self.count:
                    break
                last = frame.to_ndarray(format="rgb24")
                position += 1
                yield last
        if last is None:
            raise ClipError(f"no frames: PyAV decoded nothing from {self.path}")
        for _ in range(position, self.count):
            yield last

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


def numbered_frames(folder):
    """The file names of a frame folder's images in frame order; a ClipError naming the folder when a
    frame number is missing (img_00003.jpg absent while img_00004.jpg exists) or given twice."""
    named = frame_files(folder)  # [(number, prefix, name)]
    prefixes = {prefix for _, prefix, _ in named}
    if len(prefixes) > 1 and RGB_PREFIX in prefixes:
        named = [entry for entry in named if entry[1] == RGB_PREFIX]
    for k, (number, prefix, name) in enumerate(named):
        expected = named[k - 1][0] + 1 if k else min(number, 1)  # numbering starts at 0 or 1
        if number == expected:
            continue
        if number == expected - 1:
            raise ClipError(f"frame folder {folder}: two images for frame {number} ({named[k - 1][2]}, {name}); "
                            "keep one per frame")
        stem, ext = os.path.splitext(name)
        absent = f"{prefix}{expected:0{len(stem) - len(prefix)}d}{ext}"
        raise ClipError(f"frame folder {folder}: frame {expected} is missing ({absent} absent while {name} exists); "
                        "every later frame would shift, so the folder is not read: write it again (m3net frames)")
    return [name for _, _, name in named]


class _FrameFolderReader:
    def __init__(self, path):
        self.folder, self.names = path, numbered_frames(path)
        self.count = len(self.names)

    def read(self, indices):
        from PIL import Image

        frames = []
        for i in indices:
            path = os.path.join(self.folder, self.names[i])
            try:
                with Image.open(path) as image:
                    frames.append(np.asarray(image if image.mode == "RGB" else image.convert("RGB")))
            except OSError as err:
                raise ClipError(f"unreadable frame {path}: {err}") from err
        if len({f.shape for f in frames}) > 1:
            raise ClipError(f"frames of different sizes in {self.folder}")
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

    def chunks(self, size):
        """Every frame of the clip in order, as uint8 (n <= size, H, W, 3) arrays: ``len(self)`` frames in
        all, frame i exactly what ``read([i])`` gives (so a frame folder written from them maps every
        frame index as the video does)."""
        if self.backend == "pyav":  # one decoding pass, not one per chunk
            frames = []
            for frame in self._reader.frames():
                frames.append(frame)
                if len(frames) == size:
                    yield np.stack(frames)
                    frames = []
            if frames:
                yield np.stack(frames)
            return
        # The count the clip opened with, as sample_indices saw it, even if decord fails half-way and
        # read() continues with PyAV (whose count may differ; read() clamps to it).
        total = len(self)
        for start in range(0, total, size):
            yield self.read(range(start, min(start + size, total)))


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
