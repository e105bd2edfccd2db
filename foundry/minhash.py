"""Near-duplicate search for short Chinese texts: character shingles, MinHash, LSH clusters.

The refine stage uses this module twice: at ``dedup_threshold`` to find near-duplicates
and cross-label conflicts, and at the lower ``split_threshold`` to build the coarse
similarity groups that the train/test split must not cut through.

* **Shingles** are character k-grams of the normalised text padded with a start and an
  end marker, so the beginning and the end of a sentence (where ``吗`` and ``？`` live)
  count. A padded text shorter than ``k`` yields one shingle, the whole padded text: a text
  shorter than the shingle size is therefore only ever similar to an identical text.
* **Signatures** come from datasketch's bulk API (:meth:`datasketch.MinHash.generator`),
  chunk by chunk, with a tqdm progress bar.
* **LSH banding** uses datasketch's band parameters (``b`` bands of ``r`` rows for the
  threshold, tuned for recall, see :data:`LSH_WEIGHTS`). In memory the bands are grouped
  with numpy (one sort per band); with a ``storage_config`` (e.g. Redis) a
  :class:`datasketch.MinHashLSH` holds the index and its buckets are read back from the
  storage. Both backends give the same buckets.
* **Verification**: every candidate pair from a bucket is checked with the *exact* Jaccard
  similarity of the shingle sets, so LSH false positives never merge anything. Verified
  pairs are the edges of the similarity graph; its connected components are the clusters.
* **Exact cross similarity** (:func:`cross_jaccard`) compares two sets of texts through a
  sparse shingle-incidence product: used for exam overlap and the train/test leak check.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from datasketch import MinHash, MinHashLSH
from scipy import sparse
from tqdm.auto import tqdm

#: Markers padded around a text before shingling. The normaliser removes every control
#: character, so they can never occur inside a normalised text.
START, END = "\x02", "\x03"
#: Rows hashed per call of the MinHash bulk generator (bounds peak memory).
CHUNK = 4096
#: LSH (false positive, false negative) weights for datasketch's band parameters. Every
#: candidate is verified exactly, so the bands are tuned for recall: with 128 permutations
#: a pair right at the threshold is found with probability about 0.93-0.97, against about
#: 0.5 with datasketch's (0.5, 0.5) default.
LSH_WEIGHTS = (0.05, 0.95)
#: Buckets up to this size are verified pair by pair.
SMALL_BUCKET = 16
#: In a larger bucket, at most this many members that matched nothing act as "leaders"
#: that later members are compared with: a huge bucket of mutually dissimilar texts then
#: costs O(bucket * MAX_LEADERS), not O(bucket^2).
MAX_LEADERS = 8

#: Components up to this size are re-clustered in memory (see :func:`refined_components`).
IN_MEMORY_COMPONENT = 100_000

Backend = Literal["auto", "numpy", "datasketch"]


# ----------------------------------------------------------------------------------------
# Shingles and signatures


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


def _no_bar(progress: bool | None) -> bool | None:
    # tqdm: disable=None means "only on a terminal".
    return None if progress is None else not progress


def signatures(
    sets: Sequence[frozenset[str]],
    *,
    num_perm: int,
    seed: int,
    progress: bool | None = None,
    desc: str = "minhash",
) -> list[MinHash]:
    """MinHash signatures of ``sets`` with datasketch's bulk generator, chunk by chunk.

    A signature is a minimum over the shingles, so set iteration order cannot change it.
    ``progress=None`` shows a bar only on a terminal.
    """
    out: list[MinHash] = []
    with tqdm(total=len(sets), desc=desc, unit="row", disable=_no_bar(progress)) as bar:
        for start in range(0, len(sets), CHUNK):
            chunk = sets[start : start + CHUNK]
            encoded = ([s.encode("utf-8") for s in shingle_set] for shingle_set in chunk)
            out.extend(MinHash.generator(encoded, num_perm=num_perm, seed=seed))
            bar.update(len(chunk))
    return out


# ----------------------------------------------------------------------------------------
# LSH banding: numpy in memory, datasketch MinHashLSH for external storage


@functools.lru_cache(maxsize=64)
def band_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's ``(bands, rows)`` for ``threshold`` with :data:`LSH_WEIGHTS` (cached: the
    optimisation integrates the S-curve numerically)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    return lsh.b, lsh.r


def lsh_buckets(
    minhashes: Sequence[MinHash],
    *,
    threshold: float,
    num_perm: int,
    storage_config: dict | None = None,
    backend: Backend = "auto",
    progress: bool | None = None,
    desc: str = "lsh",
) -> list[list[int]]:
    """Every LSH bucket with at least two members, as sorted member positions.

    ``backend="auto"`` bands in memory with numpy unless a ``storage_config`` is given,
    in which case a :class:`datasketch.MinHashLSH` with that storage holds the index (and
    is deleted from the storage afterwards). Buckets are ordered by band, then by their
    smallest member, whatever the backend.
    """
    if backend == "auto":
        backend = "datasketch" if storage_config else "numpy"
    if backend == "numpy":
        if storage_config:
            raise ValueError("backend='numpy' keeps the index in memory; drop storage_config")
        return _numpy_buckets(minhashes, threshold=threshold, num_perm=num_perm)
    lsh = build_index(minhashes, threshold=threshold, num_perm=num_perm,
                      storage_config=storage_config, progress=progress, desc=desc)
    try:
        return _index_buckets(lsh)
    finally:
        drop_index(lsh)


def _numpy_buckets(minhashes: Sequence[MinHash], *, threshold: float,
                   num_perm: int) -> list[list[int]]:
    if len(minhashes) < 2:
        return []
    b, r = band_params(threshold, num_perm)
    sig = np.stack([m.hashvalues for m in minhashes])
    out: list[list[int]] = []
    for i in range(b):
        band = np.ascontiguousarray(sig[:, i * r : (i + 1) * r])
        keys = band.view(np.dtype((np.void, band.dtype.itemsize * r))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        members = np.flatnonzero(counts[inverse] > 1)
        if not len(members):
            continue
        bucket = inverse[members]
        order = np.lexsort((members, bucket))
        members, bucket = members[order], bucket[order]
        groups = np.split(members, np.flatnonzero(np.diff(bucket)) + 1)
        out.extend(sorted((g.tolist() for g in groups), key=lambda g: g[0]))
    return out


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
    """A :class:`datasketch.MinHashLSH` holding ``minhashes`` under their positions.

    Inserted through an ``insertion_session`` (buffered, pipelined on Redis). With Redis,
    keys are 4-byte big-endian integers (Redis stores bytes); in memory, plain ints.
    """
    redis = bool(storage_config) and storage_config.get("type") == "redis"
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS,
                     storage_config=storage_config, prepickle=False if redis else None)
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


def _index_buckets(lsh: MinHashLSH) -> list[list[int]]:
    """Buckets with two or more members read back from any datasketch storage.

    Bucket keys come from ``hashtable.keys()``, members from ``getmany`` (one pipelined
    round trip per 10,000 buckets on Redis).
    """
    out: list[list[int]] = []
    for table in lsh.hashtables:
        bucket_keys = list(table.keys())
        band: list[list[int]] = []
        for start in range(0, len(bucket_keys), 10_000):
            for members in table.getmany(*bucket_keys[start : start + 10_000]):
                if len(members) > 1:
                    band.append(sorted(_decode_key(m) for m in members))
        out.extend(sorted(band, key=lambda g: g[0]))
    return out


def drop_index(lsh: MinHashLSH) -> None:
    """Delete the keys an index wrote to external storage (a no-op in memory)."""
    for storage in (lsh.keys, *lsh.hashtables):
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


# ----------------------------------------------------------------------------------------
# Verified edges and components


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
        smallest: dict[int, int] = {}
        roots = [self.find(i) for i in range(n)]
        for i, root in enumerate(roots):
            smallest.setdefault(root, i)
        return np.fromiter((smallest[root] for root in roots), dtype=np.int64, count=n)


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
    bucket each member is compared with the bucket's leaders (see :data:`MAX_LEADERS`).
    A pair is verified once, however many bands it shares.

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
    backend: Backend = "auto",
    progress: bool | None = None,
    desc: str = "lsh",
) -> np.ndarray:
    """Connected components of the graph "exact Jaccard >= threshold" (found through LSH).

    Returns the component id of every position (the smallest position in its component).
    """
    uf = UnionFind(len(sets))
    buckets = lsh_buckets(minhashes, threshold=threshold, num_perm=num_perm,
                          storage_config=storage_config, backend=backend, progress=progress,
                          desc=desc)
    verified_edges(buckets, sets, threshold, uf=uf)
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
    backend: Backend = "auto",
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity components at ``threshold``, with oversized ones re-clustered stricter.

    Template-generated text chains into giant components (``北京的天气怎么样`` ~
    ``上海的天气怎么样`` ~ ...) that no stratified split can place. A component larger
    than ``max_size`` is re-clustered at ``threshold + step``, again and again up to
    ``ceiling``. Returns ``(component id, threshold that formed it)`` per position; ids are
    the smallest position of each component. Components of at most
    :data:`IN_MEMORY_COMPONENT` texts are re-clustered in memory whatever the storage.
    """
    n = len(sets)
    comp = similarity_components(sets, minhashes, threshold=threshold, num_perm=num_perm,
                                 storage_config=storage_config, backend=backend,
                                 progress=progress, desc="lsh split")
    used = np.full(n, threshold, dtype=np.float64)
    todo = [(members, threshold) for members in _big_components(comp, np.arange(n), max_size)]
    while todo:
        members, t = todo.pop()
        stricter = round(t + step, 6)
        if stricter > ceiling:
            continue
        # A re-clustered component small enough is banded in memory even when the main
        # index lives in external storage: one more remote index per component costs more
        # round trips than the component's buckets cost memory.
        small = len(members) <= IN_MEMORY_COMPONENT
        sub = similarity_components([sets[i] for i in members], [minhashes[i] for i in members],
                                    threshold=stricter, num_perm=num_perm,
                                    storage_config=None if small else storage_config,
                                    backend="auto" if small else backend, progress=False)
        comp[members] = members[sub]  # local smallest position -> global smallest position
        used[members] = stricter
        todo += [(m, stricter) for m in _big_components(comp[members], members, max_size)]
    return comp, used


def _big_components(comp: np.ndarray, members: np.ndarray, max_size: int) -> list[np.ndarray]:
    ids, counts = np.unique(comp, return_counts=True)
    return [members[comp == i] for i in ids[counts > max_size]]


# ----------------------------------------------------------------------------------------
# Exact cross similarity through a sparse shingle-incidence matrix


class ShingleMatrix:
    """Binary sparse matrix (texts x shingles) with the set sizes, for exact Jaccard.

    Build it once for a corpus; :meth:`encode` maps other sets onto the same columns
    (shingles the corpus lacks are dropped from the matrix but still counted in the sizes).
    """

    def __init__(self, sets: Sequence[frozenset[str]]) -> None:
        self.vocab: dict[str, int] = {}
        self.matrix, self.sizes = self._build(sets, grow=True)

    def _build(self, sets: Sequence[frozenset[str]], *, grow: bool):
        vocab = self.vocab
        indptr = np.zeros(len(sets) + 1, dtype=np.int64)
        indices: list[int] = []
        for row, s in enumerate(sets):
            for sh in s:
                j = vocab.get(sh)
                if j is None:
                    if not grow:
                        continue
                    j = vocab[sh] = len(vocab)
                indices.append(j)
            indptr[row + 1] = len(indices)
        sizes = np.fromiter((len(s) for s in sets), dtype=np.float64, count=len(sets))
        data = np.ones(len(indices), dtype=np.float64)
        m = sparse.csr_matrix((data, np.asarray(indices, dtype=np.int64), indptr),
                              shape=(len(sets), max(len(vocab), 1)))
        return m, sizes

    def encode(self, sets: Sequence[frozenset[str]]) -> tuple[sparse.csr_matrix, np.ndarray]:
        m, sizes = self._build(sets, grow=False)
        m.resize((len(sets), self.matrix.shape[1]))
        return m, sizes

    def rows(self, idx: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
        return self.matrix[idx], self.sizes[idx]


@dataclass(frozen=True)
class CrossSimilarity:
    """Result of :func:`cross_jaccard`.

    ``best`` is the highest similarity (0.0 when no shingle is shared) with its
    ``best_query``/``best_corpus`` positions; ``queries``, ``corpus`` and ``similarity``
    are parallel arrays of every pair at or above the requested threshold;
    ``query_best[i]`` is query ``i``'s highest similarity (0.0 if none).
    ``query_best_corpus`` is -1 except at ``best_query`` (see :func:`best_match` for others).
    """

    best: float
    best_query: int
    best_corpus: int
    queries: np.ndarray
    corpus: np.ndarray
    similarity: np.ndarray
    query_best: np.ndarray
    query_best_corpus: np.ndarray


def cross_jaccard(
    queries: tuple[sparse.csr_matrix, np.ndarray],
    corpus: tuple[sparse.csr_matrix, np.ndarray],
    *,
    threshold: float = 1.1,
    chunk: int = 256,
) -> CrossSimilarity:
    """Exact Jaccard similarities between two sets of texts given as ``(matrix, sizes)``
    (from one :class:`ShingleMatrix`): the maximum, each query's maximum, and every pair
    >= ``threshold``.

    Intersections come from one sparse product per chunk of queries, so the cost follows
    the shared shingles, not the number of pairs. Ties go to the smallest positions.
    """
    q_m, q_sizes = queries
    c_m, c_sizes = corpus
    n_q = q_m.shape[0]
    if n_q == 0 or c_m.shape[0] == 0:
        raise ValueError("cross_jaccard needs at least one query and one corpus text")
    corpus_t = sparse.csc_matrix(c_m.T)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    query_best = np.zeros(n_q)
    for start in range(0, n_q, chunk):
        inter = sparse.csr_matrix(q_m[start : start + chunk] @ corpus_t)
        if inter.nnz == 0:
            continue
        counts = np.diff(inter.indptr)
        rows = np.repeat(np.arange(start, start + inter.shape[0], dtype=np.int64), counts)
        cols = inter.indices.astype(np.int64)
        sims = inter.data / (q_sizes[rows] + c_sizes[cols] - inter.data)
        keep = np.flatnonzero(sims >= threshold)
        if len(keep):
            found.append((rows[keep], cols[keep], sims[keep]))
        nonempty = np.flatnonzero(counts)
        query_best[start + nonempty] = np.maximum.reduceat(sims, inter.indptr[nonempty])
    query_best_corpus = np.full(n_q, -1, dtype=np.int64)
    best_query = int(np.argmax(query_best))  # first of the ties
    if query_best[best_query] > 0:
        query_best_corpus[best_query] = _argmax_corpus(
            q_m[best_query], q_sizes[best_query], corpus_t, c_sizes)
    if found:
        q, c, v = (np.concatenate(parts) for parts in zip(*found, strict=True))
    else:
        q = c = np.zeros(0, dtype=np.int64)
        v = np.zeros(0)
    return CrossSimilarity(float(query_best[best_query]), best_query,
                           max(int(query_best_corpus[best_query]), 0), q, c, v, query_best,
                           query_best_corpus)


def best_match(query: tuple[sparse.csr_matrix, np.ndarray], index: int,
               corpus: tuple[sparse.csr_matrix, np.ndarray]) -> int:
    """Corpus position most similar to query ``index`` (smallest on ties; -1 if none)."""
    q_m, q_sizes = query
    c_m, c_sizes = corpus
    return _argmax_corpus(q_m[index], q_sizes[index], sparse.csc_matrix(c_m.T), c_sizes)


def _argmax_corpus(row: sparse.csr_matrix, size: float, corpus_t: sparse.csc_matrix,
                   c_sizes: np.ndarray) -> int:
    inter = sparse.csr_matrix(row @ corpus_t)
    if inter.nnz == 0:
        return -1
    cols = inter.indices.astype(np.int64)
    sims = inter.data / (size + c_sizes[cols] - inter.data)
    top = sims.max()
    return int(cols[sims == top].min())
