"""One of the processes that ``tests/test_distributed.py`` starts with torchrun.

Usage: ``distributed_job.py OUT CHUNK JOBS``: runs each job of ``JOBS`` (JSON: a list of
``[name, argv]``) through the command line (``deconfound.cli.main``), with feature chunks of
``CHUNK`` images, and writes what this process saw to ``OUT/rank<RANK>.json``: per job its exit
status, what it printed (stdout and stderr) and how many images the backbone embedded. In a job
whose name ends with ``@broken1``, process 1 cannot embed its images. Each job's start and
end are said on the launch's log (where a crash shows which job it stopped); at the end the
processes leave together and tear the process group down before the interpreter does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

import deconfound.pipelines.dictionary as build_mod
from deconfound.cli import main
from deconfound.errors import DataError
from deconfound.models.backbones import Backbone

BROKEN = "an image that only process 1 reads is broken"


def _broken(*args: Any, **kwargs: Any) -> None:
    raise DataError(BROKEN)


def run(out: Path, chunk: int, jobs: list[tuple[str, list[str]]]) -> None:
    rank = int(os.environ["RANK"])
    build_mod.CHUNK = chunk
    embedded: list[int] = []
    forward, embed = Backbone.forward, build_mod._embed
    Backbone.forward = lambda self, x: embedded.append(len(x)) or forward(self, x)  # type: ignore[method-assign]
    record = {}
    for name, argv in jobs:
        embedded.clear()
        build_mod._embed = _broken if name.endswith("@broken1") and rank == 1 else embed
        _say(rank, f"{name} started")
        printed, errors = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            status = main(argv)
        record[name] = {
            "status": status,
            "stdout": printed.getvalue(),
            "stderr": errors.getvalue(),
            "embedded": sum(embedded),
        }
        _say(rank, f"{name} ended with status {status}")
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    if dist.is_initialized():  # Lightning's group: left together, destroyed while all is alive
        dist.barrier()
        dist.destroy_process_group()
    _say(rank, "done")


def _say(rank: int, what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] rank {rank}: {what}", file=sys.__stderr__, flush=True)


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
