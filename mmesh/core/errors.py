"""Errors shared by every mmesh process.

    MeshError                 root of everything mmesh raises on purpose
      StoreUnavailable        the KV store (etcd) cannot be reached or timed out; transient
      RecordConflict          a compare-and-swap lost against a concurrent writer
      InvalidRecord           a stored value does not parse as the record it should be
      LeaseExpired            a lease is gone (expired or revoked); its keys are deleted
      RevisionCompacted       a watch asked for history the store has already compacted

Process packages subclass MeshError in their own `errors.py`.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of mmesh's own errors."""


class StoreUnavailable(MeshError):
    """The KV store did not answer; retrying later may succeed."""


class RecordConflict(MeshError):
    """A conditional write lost: the key changed since it was read."""

    def __init__(self, key: str) -> None:
        super().__init__(f"concurrent update of {key}")
        self.key = key


class InvalidRecord(MeshError):
    """A stored value is not a valid record."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid record at {key}: {reason}")
        self.key = key
        self.reason = reason


class LeaseExpired(MeshError):
    """A lease no longer exists: it expired or was revoked, and its keys are gone."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} expired or was revoked")
        self.lease_id = lease_id


class RevisionCompacted(MeshError):
    """A watch start revision is older than the store's compacted history.

    The watcher must re-read the range and watch from the revision that read
    returned.
    """

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} is compacted (history starts at {compacted}); re-read and "
            "watch again"
        )
        self.requested = requested
        self.compacted = compacted
