"""Near-duplicate search for short Chinese texts: character shingles, MinHash, LSH clusters.

The refine stage uses this module twice: once at ``dedup_threshold`` to find near-duplicates
and cross-label conflicts, once at the lower ``split_threshold`` to build the coarse
similarity groups that the train/test split must not cut through.

* Shingles are character k-grams of the normalised text padded with a start and an end
  marker, so the beginning and the end of a sentence (where ``吗`` and ``？`` live) count.
  A padded text shorter than ``k`` yields one shingle, the whole padded text: a text
  shorter than the shingle size is therefore only ever similar to an identical text.
* Signatures are computed with :meth:`datasketch.MinHash.generator` (the bulk API) in
  chunks, with an optional tqdm progress bar.
* :class:`datasketch.MinHashLSH` holds the index; its ``storage_config`` may point at Redis.
  Instead of querying every row (which returns whole buckets again and again), the buckets
  are read once and each bucket's members are verified against a few bucket "leaders" with
  the exact Jaccard similarity of their shingle sets. Verified pairs are the edges of the
  similarity graph; its connected components are the clusters.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH
from tqdm.auto import tqdm

#: Markers padded around a text before shingling. The normaliser removes every control
#: character, so they can never occur inside a normalised text.
START, END = "\x02", "\x03"
#: Rows hashed per call of the MinHash bulk generator (bounds peak memory).
CHUNK = 4096
#: LSH (false positive, false negative) weights: every candidate is verified with the exact
#: Jaccard similarity, so the index is tuned for recall (about 0.93-0.97 at the threshold
#: itself with 128 permutations, against about 0.5 with datasketch's (0.5, 0.5) default).
LSH_WEIGHTS = (0.05, 0.95)
#: Buckets up to this size are verified pair by pair.
SMALL_BUCKET = 16
#: In a larger bucket at most this many unmatched members of one LSH bucket act as verification leaders; a
#: huge bucket of mutually dissimilar texts then costs O(bucket * MAX_LEADERS), not O(n^2).
MAX_LEADERS = 8


def shingles(text: str, k: int) -> frozenset[str]:
    """Character ``k``-shingles of ``text`` padded with :data:`START` and :data:`END`.

    >>> sorted(shingles("好的", 3))
    ['\\x02好的', '好的\\x03']
    >>> shingles("", 3) == frozenset({START + END})
    True
    """
    if k < 1:
        raise ValueError(f"shingle size must be >= 1, got {k}")
    padded = START + text + END
    if len(padded) <= k:
        return frozenset((padded,))
    return frozenset(padded[i : i + k] for i in range(len(padded) - k + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Exact Jaccard similarity of two shingle sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def signatures(
    sets: Sequence[frozenset[str]],
    *,
    num_perm: int,
    seed: int,
    progress: bool | None = None,
    desc: str = "minhash",
) -> list[MinHash]:
    """MinHash signatures of ``sets`` with datasketch's bulk generator, chunk by chunk.

    Shingles are hashed in sorted order so that the result never depends on set iteration
    order (MinHash is order-free anyway; sorting only makes the work reproducible).
    ``progress=None`` shows a bar only on a terminal.
    """
    out: list[MinHash] = []
    with tqdm(total=len(sets), desc=desc, unit="row", disable=_no_bar(progress)) as bar:
        for start in range(0, len(sets), CHUNK):
            chunk = sets[start : start + CHUNK]
            encoded = ([s.encode("utf-8") for s in sorted(shingle_set)] for shingle_set in chunk)
            out.extend(MinHash.generator(encoded, num_perm=num_perm, seed=seed))
            bar.update(len(chunk))
    return out


def _no_bar(progress: bool | None) -> bool | None:
    # tqdm: disable=None means "only on a TTY".
    return None if progress is None else not progress


def _encode_key(i: int) -> bytes:
    return struct.pack(">I", i)


def _decode_key(key: bytes | int) -> int:
    return key if isinstance(key, int) else struct.unpack(">I", key)[0]


def build_index(
    minhashes: Sequence[MinHash],
    *,
    threshold: float,
    num_perm: int,
    storage_config: dict | None = None,
    progress: bool | None = None,
    desc: str = "lsh",
) -> MinHashLSH:
    """A :class:`MinHashLSH` holding ``minhashes`` under their positions as keys.

    With a Redis ``storage_config`` keys are 4-byte big-endian integers (Redis stores
    bytes); with the default in-memory storage they are plain ints.
    """
    redis = bool(storage_config) and storage_config.get("type") == "redis"
    lsh = MinHashLSH(
        threshold=threshold,
        num_perm=num_perm,
        weights=LSH_WEIGHTS,
        storage_config=storage_config,
        prepickle=False if redis else None,
    )
    with (
        lsh.insertion_session(buffer_size=50_000) as session,
        tqdm(total=len(minhashes), desc=desc, unit="row", disable=_no_bar(progress)) as bar,
    ):
        for i, m in enumerate(minhashes):
            session.insert(_encode_key(i) if redis else i, m, check_duplication=False)
            if i % 4096 == 4095:
                bar.update(4096)
        bar.update(len(minhashes) % 4096)
    return lsh


def iter_buckets(lsh: MinHashLSH) -> Iterator[list[int]]:
    """Members (sorted positions) of every LSH bucket with at least two members.

    Works for any datasketch storage: bucket keys come from ``hashtable.keys()`` and the
    members from ``getmany`` (pipelined on Redis). Buckets are yielded in a deterministic
    order (band, then bucket key).
    """
    for table in lsh.hashtables:
        bucket_keys = sorted(table.keys())
        for start in range(0, len(bucket_keys), 10_000):
            batch = bucket_keys[start : start + 10_000]
            for members in table.getmany(*batch):
                if len(members) > 1:
                    yield sorted(_decode_key(m) for m in members)


def query(lsh: MinHashLSH, minhash: MinHash) -> list[int]:
    """Positions of the indexed texts that share at least one band with ``minhash``."""
    return sorted(_decode_key(k) for k in lsh.query(minhash))


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def labels(self) -> np.ndarray:
        """Component id of every element: the smallest element of its component."""
        n = len(self.parent)
        roots = np.fromiter((self.find(i) for i in range(n)), dtype=np.int64, count=n)
        smallest: dict[int, int] = {}
        for i, r in enumerate(roots.tolist()):
            smallest.setdefault(r, i)
        return np.fromiter((smallest[r] for r in roots.tolist()), dtype=np.int64, count=n)


@dataclass(frozen=True)
class Edge:
    """A verified similar pair ``a < b`` with its exact Jaccard similarity."""

    a: int
    b: int
    similarity: float


def verified_edges(
    buckets: Iterable[list[int]],
    sets: Sequence[frozenset[str]],
    threshold: float,
    *,
    uf: UnionFind | None = None,
) -> list[Edge]:
    """Verify LSH bucket members with the exact Jaccard similarity; return pairs >= threshold.

    A bucket of at most :data:`SMALL_BUCKET` members is verified pair by pair. In a larger
    bucket each member is compared with the bucket's leaders (members that matched no
    earlier leader, at most :data:`MAX_LEADERS`), which keeps a huge bucket of mutually
    dissimilar texts linear. A pair is verified once, however many bands it shares.

    With ``uf``, matched pairs are unioned into it and pairs already in one component are
    skipped: use this when only the components matter, not every edge.
    """
    edges: dict[tuple[int, int], float] = {}
    rejected: set[tuple[int, int]] = set()

    def match(a: int, b: int) -> bool:
        pair = (a, b) if a < b else (b, a)
        if pair in edges:
            return True
        if pair in rejected:
            return False
        if uf is not None and uf.find(a) == uf.find(b):
            return True
        sim = jaccard(sets[a], sets[b])
        if sim < threshold:
            rejected.add(pair)
            return False
        edges[pair] = sim
        if uf is not None:
            uf.union(a, b)
        return True

    for members in buckets:
        if len(members) <= SMALL_BUCKET:
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    match(a, b)
            continue
        leaders: list[int] = []
        for m in members:
            matched = False
            for lead in leaders:
                matched = match(lead, m) or matched
            if not matched and len(leaders) < MAX_LEADERS:
                leaders.append(m)
    return [Edge(a, b, s) for (a, b), s in sorted(edges.items())]


def similarity_components(
    sets: Sequence[frozenset[str]],
    minhashes: Sequence[MinHash],
    *,
    threshold: float,
    num_perm: int,
    storage_config: dict | None = None,
    progress: bool | None = None,
    desc: str = "lsh",
) -> np.ndarray:
    """Connected components of the graph "exact Jaccard >= threshold" (found through LSH).

    Returns the component id of every position (the smallest position in its component).
    """
    uf = UnionFind(len(sets))
    if len(sets) > 1:
        lsh = build_index(
            minhashes,
            threshold=threshold,
            num_perm=num_perm,
            storage_config=storage_config,
            progress=progress,
            desc=desc,
        )
        try:
            verified_edges(iter_buckets(lsh), sets, threshold, uf=uf)
        finally:
            drop_index(lsh)
    return uf.labels()


def refined_components(
    sets: Sequence[frozenset[str]],
    minhashes: Sequence[MinHash],
    *,
    threshold: float,
    max_size: int,
    step: float = 0.1,
    ceiling: float = 0.95,
    num_perm: int,
    storage_config: dict | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity components at ``threshold``, with oversized ones re-clustered stricter.

    Template-generated text chains into giant components (``北京的天气怎么样`` ~
    ``上海的天气怎么样`` ~ ...), which no stratified split can use. A component larger
    than ``max_size`` is re-clustered at ``threshold + step``, again and again up to
    ``ceiling``. Returns ``(component id, threshold that formed it)`` per position; ids are
    the smallest position of each component.
    """
    n = len(sets)
    comp = similarity_components(sets, minhashes, threshold=threshold, num_perm=num_perm,
                                 storage_config=storage_config, progress=progress)
    used = np.full(n, threshold, dtype=np.float64)
    todo = [(members, threshold) for members in _big_components(comp, np.arange(n), max_size)]
    while todo:
        members, t = todo.pop()
        stricter = round(t + step, 6)
        if stricter > ceiling:
            continue
        sub = similarity_components([sets[i] for i in members], [minhashes[i] for i in members],
                                    threshold=stricter, num_perm=num_perm,
                                    storage_config=storage_config, progress=False)
        comp[members] = members[sub]  # sub ids are local smallest positions
        used[members] = stricter
        todo += [(m, stricter) for m in _big_components(comp[members], members, max_size)]
    return comp, used


def _big_components(comp: np.ndarray, members: np.ndarray, max_size: int) -> list[np.ndarray]:
    ids, counts = np.unique(comp, return_counts=True)
    return [members[comp == i] for i in ids[counts > max_size]]


def drop_index(lsh: MinHashLSH) -> None:
    """Delete the keys an index wrote to external storage (a no-op in memory)."""
    storages = [lsh.keys, *lsh.hashtables]
    for storage in storages:
        redis = getattr(storage, "_redis", None)
        if redis is None:
            continue
        name = storage._name
        member_keys = redis.hvals(name)
        pipe = redis.pipeline()
        for start in range(0, len(member_keys), 10_000):
            pipe.delete(*member_keys[start : start + 10_000])
        pipe.delete(name)
        pipe.execute()


@dataclass(frozen=True)
class CrossSimilarity:
    """Result of :func:`cross_jaccard`.

    ``best`` is the highest similarity (0.0 when no shingle is shared) with its
    ``best_query``/``best_corpus`` positions; ``queries``, ``corpus`` and ``similarity``
    are parallel arrays of every pair at or above the requested threshold.
    """

    best: float
    best_query: int
    best_corpus: int
    queries: np.ndarray
    corpus: np.ndarray
    similarity: np.ndarray


def cross_jaccard(
    queries: Sequence[frozenset[str]],
    corpus: Sequence[frozenset[str]],
    *,
    threshold: float = 1.1,
    chunk: int = 512,
) -> CrossSimilarity:
    """Exact Jaccard similarities between query sets and corpus sets: the maximum, and
    every pair at or above ``threshold``.

    Sets become rows of a sparse binary matrix; intersections come from one sparse
    product per chunk of queries, so the cost follows the shared shingles, not the number
    of pairs. Ties of the maximum go to the smallest positions.
    """
    from scipy import sparse

    if not queries or not corpus:
        raise ValueError("cross_jaccard needs at least one query and one corpus set")
    vocab: dict[str, int] = {}
    corpus_m = _incidence(corpus, vocab, grow=True)
    query_m = _incidence(queries, vocab, grow=False)
    corpus_sizes = np.fromiter((len(s) for s in corpus), dtype=np.float64, count=len(corpus))
    query_sizes = np.fromiter((len(s) for s in queries), dtype=np.float64, count=len(queries))
    corpus_t = sparse.csc_matrix(corpus_m.T)
    best = (0.0, 0, 0)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(queries), chunk):
        inter = (query_m[start : start + chunk] @ corpus_t).tocoo()
        if inter.nnz == 0:
            continue
        rows = inter.row.astype(np.int64) + start
        cols = inter.col.astype(np.int64)
        sims = inter.data / (query_sizes[rows] + corpus_sizes[cols] - inter.data)
        keep = sims >= threshold
        if keep.any():
            found.append((rows[keep], cols[keep], sims[keep]))
        top = float(sims.max())
        if top > best[0]:
            hit = np.flatnonzero(sims == top)
            pairs = sorted(zip(rows[hit].tolist(), cols[hit].tolist(), strict=True))
            best = (top, *pairs[0])
    empty = np.zeros(0, dtype=np.int64)
    q, c, v = (np.concatenate(parts) for parts in zip(*found, strict=True)) if found else (
        empty, empty, np.zeros(0))
    return CrossSimilarity(best[0], best[1], best[2], q, c, v)


def _incidence(sets: Sequence[frozenset[str]], vocab: dict[str, int], *, grow: bool):
    """Binary CSR matrix (sets x vocab); unknown shingles are dropped unless ``grow``."""
    from scipy import sparse

    indptr = [0]
    indices: list[int] = []
    for s in sets:
        for sh in s:
            j = vocab.get(sh)
            if j is None:
                if not grow:
                    continue
                j = vocab[sh] = len(vocab)
            indices.append(j)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float64)
    return sparse.csr_matrix(
        (data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(sets), max(len(vocab), 1)),
    )
