"""distributed.py - the processes of a run as torchrun describes them, and the checks that keep them in step.

torchrun starts one process per GPU and tells each its place in the environment (RANK, WORLD_SIZE, LOCAL_RANK); a
plain `python` run is a world of one. This is the one place that reads it. Training (DDP) needs the process group
and a few collectives; the batch jobs (captions, pairs) share only files, so they take the world without a group.

Multi-node runs fail in ways a single machine never shows: one node lacks a video, or sees another run directory.
on_every_rank runs the checks before the model loads on every rank and stops them all with one line naming the
rank that failed, instead of leaving the others waiting in the next collective.

    world = distributed.setup()          # in dpo / sft (init_process_group when there are several processes)
    world = distributed.from_environment()   # in captions / pairs (no process group)
"""

import contextlib
import hashlib
import json
import os
import secrets
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    """The processes of a run, as torchrun describes them to each one: this one's rank, how many there are, and which
    GPU of its node this one drives. A plain `python` run is a world of one."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self):
        return self.rank == 0

    @property
    def device(self):
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def from_environment():
    """This process's World, from what torchrun put in the environment (a world of one without torchrun)."""
    if "RANK" not in os.environ:
        return World()
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def setup():
    """from_environment(), and the process group training needs when there are several processes (NCCL on GPUs,
    gloo on CPUs), each process on its own GPU."""
    world = from_environment()
    if world.size > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world


def all_mean(world, values):
    """Average a dict of floats over ranks."""
    if world.size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world.size).tolist()))


def all_sum(world, value):
    if world.size == 1:
        return value
    t = torch.tensor(float(value), dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.item()


def all_gather(world, obj):
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def on_every_rank(world, work):
    """work() on every rank, e.g. reading the data: each rank reads its own disk, and one node may lack a file the
    others have. When it fails on some ranks, every rank raises (a failing rank its own error, the others a
    ValueError naming the first rank that failed), instead of the others waiting for it in the next collective."""
    if world.size == 1:
        return work()
    result, error = None, None
    try:
        result = work()
    except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks have heard of it
        error = e
    reports = all_gather(world, error and (str(error), socket.gethostname()))
    failed = [(rank, report) for rank, report in enumerate(reports) if report]
    if failed:
        rank, (message, host) = failed[0]
        error = error or ValueError(f"rank {rank} ({host}): {message}")
        error.known_to_every_rank = True  # temple.py prints it on rank 0 only
        raise error
    return result


def on_main(world, work):
    """work() on rank 0 alone (the writes: checkpoints, config.json, caches); when it fails, every rank raises."""
    return on_every_rank(world, work if world.main else lambda: None)


def check_same_data(world, items, what):
    """Every rank must train on the same examples in the same order: each reads the data file itself and leaves out
    the examples whose video it cannot find, so a video missing on one node's disk would give that rank another
    list, another data order and another number of steps, and the ranks would hang waiting for each other."""
    if world.size == 1:
        return
    digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
    views = all_gather(world, (digest, len(items), socket.gethostname()))
    differ = [f"rank {rank} ({host}: {count} examples)" for rank, (seen, count, host) in enumerate(views)
              if seen != views[0][0]]
    if differ:
        raise ValueError(f"{what}: {', '.join(differ)} read other examples than rank 0 ({views[0][2]}: "
                         f"{views[0][1]}); every node needs the same data and videos at the same paths")


def check_shared_directory(directory, world, what="the run directory"):
    """Multi-node runs need one directory every rank sees (a disk the nodes share): rank 0 writes the checkpoints
    and the reference cache, the others read them back on resume. Rank 0 writes a token, each rank looks for it; a
    rank that cannot see it stops the run on every rank, named in one line."""
    if world.size == 1:
        return
    token = all_gather(world, secrets.token_hex(8))[0]  # rank 0's
    probe = os.path.join(directory, f".shared-check-{token}")

    def write_probe():
        os.makedirs(directory, exist_ok=True)
        with open(probe, "w") as f:
            f.write(token)

    on_main(world, write_probe)
    seen = os.path.exists(probe) and open(probe).read() == token
    views = all_gather(world, (seen, socket.gethostname()))
    if world.main:
        with contextlib.suppress(OSError):  # a probe left behind harms nothing
            os.remove(probe)
    blind = [f"rank {rank} ({host})" for rank, (ok, host) in enumerate(views) if not ok]
    if blind:
        raise ValueError(f"{what} {directory} is not shared: {', '.join(blind)} cannot see what rank 0 "
                         f"({views[0][1]}) writes there; put it on a disk every node mounts at the same path")
