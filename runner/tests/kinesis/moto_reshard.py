"""moto's server with Kinesis resharding as AWS does it, for the runner's reshard test.

moto's SplitShard moves the parent's records into the children and MergeShards copies the
parents' records into the child; on AWS the records stay in the closed parents and the
children start empty, and closed shards take no new records. This patch keeps moto's shard
bookkeeping, drops the moves and routes records to open shards only, so a
reader must finish the parents before the children to keep per-key order.

Usage: python moto_reshard.py <port>
"""
import hashlib
import os
import sys

from moto.kinesis import models
from moto.server import main

# DynamoDB transactions isolated, as in the stack's moto (scripts/moto_server.py says why).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../scripts"))
from moto_server import serialize_dynamodb  # noqa: E402


def _last_id(stream):
    return max(s._shard_id for s in stream.shards.values())


def split_shard(self, shard_to_split, new_starting_hash_key):
    start = int(new_starting_hash_key)
    shard = self.shards[shard_to_split]
    if not (shard.starting_hash < start < shard.ending_hash) or not shard.is_open:
        raise models.InvalidArgumentError(shard_to_split)
    last = _last_id(self)
    for i, (lo, hi) in enumerate(((shard.starting_hash, start - 1), (start, shard.ending_hash))):
        child = models.Shard(last + 1 + i, starting_hash=lo, ending_hash=hi, parent=shard.shard_id)
        self.shards[child.shard_id] = child
    shard.is_open = False


def merge_shards(self, shard_to_merge, adjacent_shard_to_merge):
    a = self.shards[shard_to_merge]
    b = self.shards[adjacent_shard_to_merge]
    if a.ending_hash + 1 != b.starting_hash and b.ending_hash + 1 != a.starting_hash:
        raise models.InvalidArgumentError(adjacent_shard_to_merge)
    child = models.Shard(
        _last_id(self) + 1,
        starting_hash=min(a.starting_hash, b.starting_hash),
        ending_hash=max(a.ending_hash, b.ending_hash),
        parent=a.shard_id,
        adjacent_parent=b.shard_id,
    )
    self.shards[child.shard_id] = child
    a.is_open = False
    b.is_open = False


def get_shard_for_key(self, partition_key, explicit_hash_key):
    # Only open shards take records (moto also offers closed ones, listed first). moto's
    # version is not reused by swapping `self.shards` for the open ones: the server is
    # threaded, and a GetShardIterator on a closed parent running meanwhile would find no
    # such shard.
    if not isinstance(partition_key, str) or len(partition_key) > 256:
        raise models.InvalidArgumentError("partition_key")
    if explicit_hash_key:
        key = int(explicit_hash_key)
        if key >= 2**128:
            raise models.InvalidArgumentError("explicit_hash_key")
    else:
        key = int(hashlib.md5(partition_key.encode("utf-8")).hexdigest(), 16)
    for shard in list(self.shards.values()):
        if shard.is_open and shard.starting_hash <= key < shard.ending_hash:
            return shard
    return None


models.Stream.get_shard_for_key = get_shard_for_key
models.Stream.split_shard = split_shard
models.Stream.merge_shards = merge_shards
serialize_dynamodb()
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
