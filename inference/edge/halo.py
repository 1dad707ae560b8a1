"""One image's detector on several edge servers at once, each holding a horizontal band of it through the whole
network and swapping rows with the edges of the neighbouring bands after every layer (inference/models/halo.py;
the edges' side in inference/resources/triton/python_model.py).

The workstation sends every band at once under one new session (16 random bytes, travelling only inside the
requests), telling the edge of band i where the edge of band i + 1 listens for its peers (as that edge's part
advertises it); the edges connect to each other, and each returns its band's rows of the raw head maps, joined
and decoded here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch

from inference.edge.client import LINK_FAILURES, EdgeClient, EdgeError, EdgeFailure, EdgeGroup
from inference.edge.repository import HALO_ADDRESS
from inference.models.halo import HEAD_MAPS, HaloBand
from inference.models.parts import EdgePartSpec


@dataclass(frozen=True)
class HaloReply:
    detections: torch.Tensor  # [1, N, 5 + classes], as the detector's forward returns them
    edge_ms: float            # the slowest band's time on its edge: its compute and its waits for rows
    round_trip_ms: float      # from sending the bands to the last band's rows here
    servers: tuple[str, ...]  # the edge of each band, in band order


def detect_on_bands(servers: Sequence[EdgeClient] | EdgeGroup, spec: EdgePartSpec, band: HaloBand,
                    image: torch.Tensor, timeout_s: float | None = None) -> HaloReply:
    """The detections of `image` [1, 3, size, size] with band i on `servers[i]` (a group's working servers, in
    its order: one whose link fails is set aside); EdgeError where an edge fails (the others then stop at their next
    swap) or there are fewer servers than bands."""
    split = band.split(spec.halo_bands)
    group = servers if isinstance(servers, EdgeGroup) else None
    clients = list(servers.working_clients() if isinstance(servers, EdgeGroup) else servers)
    if len(clients) < split.count:
        raise EdgeError(EdgeFailure.UNREACHABLE, f"a split into {split.count} bands needs {split.count} working edge "
                                                 f"servers, {len(clients)} answer")
    clients = clients[:split.count]

    def failed(client: EdgeClient, error: EdgeError) -> EdgeError:
        """`error`, its server set aside by the group where the workstation's own link to it failed (not where it
        only reports its neighbour's failure)."""
        if group is not None and error.failure in LINK_FAILURES:
            group.set_aside(client)
        return error

    addresses = []
    for client in clients:
        try:
            addresses.append(client.part_parameter(spec, HALO_ADDRESS))
        except EdgeError as error:
            raise failed(client, error) from None
    if not all(addresses[1:]):
        raise EdgeError(EdgeFailure.MODEL_MISMATCH, f"an edge server's {spec.name} names no address for its peers "
                                                    "(serve it with --halo-listen)")
    session = secrets.token_hex(16)
    started = time.perf_counter()
    pool = ThreadPoolExecutor(split.count, thread_name_prefix="halo-band")
    pending = [pool.submit(client.infer, spec, {"image": rows.numpy()}, HEAD_MAPS, None, timeout_s,
                           {"mededge_halo_session": session, "mededge_halo_band": index,
                            **({"mededge_halo_below": addresses[index + 1]} if index + 1 < split.count else {})})
               for index, (client, rows) in enumerate(zip(clients, split.bands(image), strict=True))]
    wait(pending, return_when=FIRST_EXCEPTION)
    pool.shutdown(wait=False)  # a band whose neighbour failed ends on its edge by itself (its rows stop coming)
    errors = [failed(client, raised) for client, future in zip(clients, pending, strict=True)
              if future.done() and isinstance(raised := future.exception(), EdgeError)]
    if errors:  # the study goes on without waiting for the other bands; a failed link's reason first
        raise min(errors, key=lambda e: e.failure not in LINK_FAILURES)
    replies = [future.result() for future in pending]
    round_trip_ms = (time.perf_counter() - started) * 1e3
    maps = [[torch.from_numpy(reply.outputs[name].copy()) for name in HEAD_MAPS] for reply in replies]
    with torch.inference_mode():
        detections = band.decode(split.join(maps))
    return HaloReply(detections, max(reply.edge_ms for reply in replies), round_trip_ms,
                     tuple(reply.server for reply in replies))
