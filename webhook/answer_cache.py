"""Answers to pods seen before, by the pod's exact JSON, for the config in force.

A rollout (a Deployment or ReplicaSet scaling up, a Job's parallel pods) creates its pods from one
template; at admission they have no name yet (only generateName), no uid and no creationTimestamp, so
every replica's object is the same bytes but for the time in managedFields (which the key leaves out),
and injection is a pure function of the pod and the config: the first replica's patch answers the rest.
A DaemonSet's or StatefulSet's pods differ from each other (node affinity, name) and simply miss. The
uid, the log line and the metrics stay per review.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

# Bounded in entries and bytes so that distinct pods (a DaemonSet, hostile input) cannot grow memory.
MAX_ENTRIES = 128  # a rollout needs one; this is many templates rolling out at once
MAX_BYTES = 2 * 1024 * 1024
MAX_POD_BYTES = 64 * 1024  # bigger pods are answered but not kept: they are rare and would crowd others out
# A review body this big cannot hold a pod small enough to keep (managedFields alone roughly double a pod):
# such reviews skip the cache without serialising the pod for a key.
MAX_BODY_BYTES = 4 * MAX_POD_BYTES


@dataclass(frozen=True)
class Answer:
    """What a review of this pod decided, without the request's uid."""

    allowed: bool
    fields: dict[str, Any]  # the response's fields besides uid and allowed (patch, warnings, status)
    result: str
    reason: str
    injected: tuple[str, ...]
    warnings: tuple[str, ...]

    def size(self) -> int:
        """Bytes held beyond the key: the patch, warnings and denial message, as they go on the wire."""
        return len(orjson.dumps(self.fields))


class AnswerCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[bytes, tuple[Answer, int]] = OrderedDict()  # key -> (answer, its bytes)
        self._bytes = 0
        self._config: object = None
        self.hits = self.misses = 0

    def get(self, config: object, pod_json: bytes) -> Answer | None:
        if config is not self._config:  # a reloaded config makes every answer stale
            self._entries.clear()
            self._bytes, self._config = 0, config
        entry = self._entries.get(pod_json)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(pod_json)
        self.hits += 1
        return entry[0]

    def put(self, config: object, pod_json: bytes, answer: Answer) -> None:
        if config is not self._config or len(pod_json) > MAX_POD_BYTES or pod_json in self._entries:
            return
        size = len(pod_json) + answer.size()
        self._entries[pod_json] = (answer, size)
        self._bytes += size
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            _, (_, old_size) = self._entries.popitem(last=False)
            self._bytes -= old_size

    def __len__(self) -> int:
        return len(self._entries)
