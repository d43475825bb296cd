"""Multi-GPU / multi-node extraction under torchrun, with no two processes writing one HDF5 file.

    torchrun --nproc-per-node G [--nnodes N ...] -m m3net extract --dataset ... --out FILE.h5

1. Rank 0 creates ``FILE.h5`` (or reopens it, refusing other provenance) and closes it.
2. Every rank takes the rows ``row % WORLD_SIZE == RANK`` not done in FILE.h5 and writes them to
   its own shard ``FILE.h5.shard<RANK>-of-<WORLD_SIZE>`` (same schema, resumable like any cache),
   on the GPU ``LOCAL_RANK``.
3. After a barrier rank 0 copies every done shard row and the shards' failures into FILE.h5,
   then deletes the shards. A killed run re-run with the same world size resumes from the shards.

Shards and FILE.h5 must be on a file system all ranks see (multi-node: a shared one). The
process group (gloo) only carries barriers and small status objects; no tensors.
"""
import dataclasses
import os
import time

import h5py
import numpy as np
import torch
import torch.distributed as dist

from m3net.extract.loop import _recorded_failures, compute_rows, prepare, summarise


def shard_path(out, rank, world):
    return f"{out}.shard{rank}-of-{world}"


def _agree(ok, message):
    """Every rank learns whether all succeeded; the ones that did not raise, the rest raise too."""
    status = [None] * dist.get_world_size()
    dist.all_gather_object(status, (ok, message))
    errors = [f"rank {rank}: {msg}" for rank, (good, msg) in enumerate(status) if not good]
    if errors:
        raise RuntimeError("extraction stopped: " + "; ".join(errors))


def _guarded(step):
    try:
        return step(), (True, "")
    except Exception as err:  # reported to every rank by _agree, so no rank waits forever at a barrier
        return None, (False, f"{type(err).__name__}: {err}")


def merge_shards(prepared, out, shards):
    """Copy done rows and failures of ``shards`` into ``out``; returns the rows copied."""
    copied = 0
    with prepared.open_writer(out) as writer:
        pending = set(writer.pending())
        recorded = _recorded_failures(writer)
        for path in shards:
            if not os.path.exists(path):
                continue
            with h5py.File(path, "r", locking=False) as shard:
                for row in np.flatnonzero(shard["done"][()]):
                    if int(row) in pending:
                        writer.write(int(row), shard["features"][row])
                        copied += 1
                for record in shard["failures"][()]:
                    video_id, error = (v.decode() if isinstance(v, bytes) else v for v in record)
                    if (video_id, error) not in recorded:
                        writer.add_failure(video_id, error)
                        recorded.add((video_id, error))
    for path in shards:
        if os.path.exists(path):
            os.remove(path)
    return copied


def extract_sharded(config):
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    config = dataclasses.replace(config, progress=config.progress and rank == 0)  # one progress bar
    dist.init_process_group("gloo")
    try:
        device = None
        if config.device in ("auto", "cuda") and torch.cuda.is_available():
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        prepared, status = _guarded(lambda: prepare(config, device))
        _agree(*status)
        if rank == 0:
            _, status = _guarded(lambda: prepared.open_writer(config.out).close())  # create / check provenance
        else:
            status = (True, "")
        _agree(*status)
        with h5py.File(config.out, "r", locking=False) as f:
            main_done = f["done"][()]
        started = time.perf_counter()

        def run_shard():
            with prepared.open_writer(shard_path(config.out, rank, world)) as writer:
                rows = [r for r in prepared.wanted(writer.pending()) if r % world == rank and not main_done[r]]
                return (len(rows), *compute_rows(config, prepared, writer, rows))

        result, status = _guarded(run_shard)
        _agree(*status)
        pending, computed, failed = result
        if rank == 0:
            _, status = _guarded(lambda: merge_shards(prepared, config.out,
                                                      [shard_path(config.out, r, world) for r in range(world)]))
        _agree(*status)
        with h5py.File(config.out, "r", locking=False) as f:
            done = f["done"][()]
        summary = summarise(config, prepared, pending, computed, failed, done, time.perf_counter() - started)
        summary.update(rank=rank, world_size=world)
        dist.barrier()  # no rank exits (and makes torchrun stop the others) before all have summarised
        return summary
    finally:
        dist.destroy_process_group()
