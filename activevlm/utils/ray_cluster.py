"""Ray, imported only by the commands that ask for it (``--ray``, ``--ray-address``).

:func:`connect` returns the initialised ``ray`` module: the session already running in this
process, a cluster at an address, or a local Ray on this machine. A missing package or an
address that does not answer is one :class:`RayUnavailableError` paragraph (Ray itself would
retry an unreachable address for minutes).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from activevlm.utils.errors import ActiveVLMError

CONNECT_TIMEOUT_S = 5.0


class RayUnavailableError(ActiveVLMError, RuntimeError):
    """Ray is not installed, or the cluster address does not answer."""


def import_ray() -> ModuleType:
    """``ray`` (with Ray Data), or a :class:`RayUnavailableError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the pipelines' engine)
    except ImportError as e:
        raise RayUnavailableError(
            f"Ray is not installed (module {e.name!r} is missing); install the 'ray' extra "
            "(pip install -e \".[ray]\", which scripts/setup.sh does) or run without --ray"
        ) from e
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None,
            progress: bool = True) -> ModuleType:
    """The initialised ``ray`` module.

    ``address``: ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` of a running cluster (checked with
    a TCP connection first), ``"auto"`` (the cluster this machine belongs to), or None: the
    session already initialised in this process, else a new local Ray with ``num_cpus``
    (default: all cores). ``progress`` toggles Ray Data's progress bars.
    """
    ray = import_ray()
    if not ray.is_initialized():
        if address not in (None, "auto"):
            _check_reachable(address)
        try:
            ray.init(address=address, num_cpus=num_cpus if address is None else None,
                     include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            where = "a local Ray" if address is None else f"the Ray cluster at {address!r}"
            raise RayUnavailableError(f"could not start or join {where} (see --debug for "
                                      "Ray's own message)") from e
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    if not progress:  # nor its "execution finished" lines
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def _check_reachable(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailableError(f"Ray address {address!r} is not HOST:PORT (e.g. "
                                  "10.0.0.5:6379, ray://10.0.0.5:10001) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else "connection refused"
        raise RayUnavailableError(
            f"no Ray cluster answers at {address!r} ({why}); start one with `ray start "
            "--head` on that machine, or pass its address as printed there") from e


def actor_count(ray: ModuleType, *, num_cpus: float, num_gpus: float) -> int:
    """How many workers of ``num_cpus`` CPUs (and ``num_gpus`` GPUs) the cluster holds."""
    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1) // num_cpus))


def actor_map(ray: ModuleType, units: list[dict], worker: type, payload, *, actors: int,
              num_cpus: float = 1, num_gpus: float = 0) -> Iterator[dict[str, np.ndarray]]:
    """A Ray Data pipeline: each of ``units`` (one work unit, e.g. ``{"shard": k}``, one
    block each) goes through a pool of ``actors`` instances of the callable class ``worker``,
    built once per actor as ``worker([payload_ref])`` (``payload`` is put in the object store
    once; the list keeps Ray from resolving the reference before the worker asks for it).
    Yields the workers' output batches (dicts of arrays) as they finish, in no fixed order."""
    if not units:
        return
    payload_ref = ray.put(payload)
    ds = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        worker, batch_size=1, fn_constructor_args=([payload_ref],),
        compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(units)))),
        num_cpus=num_cpus, num_gpus=num_gpus)
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
