"""The shuffle, in two passes that both run in the workers and both write in place: the
patches into their block of the output as they are cut, then each block sorted.

Every patch's final row is known before its image is cut (the images'
sizes give each image its place in the unshuffled order, and the seeded
permutation the rest). The output's datasets are divided into blocks of
rows (buckets); a worker writes each patch to the next free row of its
bucket, in whatever order the patches come, and notes in a scratch file
(``slots``) which final row that slot holds. Once all images are cut, each
bucket is read, put in order in memory and written back over itself. The
datasets' chunks were allocated up front, so every row has a fixed place in
the file: both passes write large runs of rows, each row twice, and the
only scratch is 8 bytes a patch (nothing else is written, or freed, twice).

Rows are float32 NCHW patches (:mod:`srcnn_theano.patches.extract`).
"""
import os

import numpy as np

STAGE_BYTES = 32 << 20   # per worker: patches gathered, then written bucket by bucket


def pwrite_all(fd, buf, offset):
    """``os.pwrite`` until all of ``buf`` is written at ``offset``."""
    while len(buf):
        done = os.pwrite(fd, buf, offset)
        buf, offset = buf[done:], offset + done


def pread_into(fd, buf, offset):
    """Fill ``buf`` (a writable byte memoryview) from ``offset`` (moves the fd's position);
    OSError if the file ends."""
    os.lseek(fd, offset, os.SEEK_SET)
    while len(buf):
        got = os.readv(fd, [buf])      # (os.preadv is missing on macOS)
        if not got:
            raise OSError(f"file shorter than expected (at byte {offset})")
        buf, offset = buf[got:], offset + got


class Buckets:
    """The buckets of one patch file: blocks of rows of its datasets, filled out of order.

    Parameters
    ----------
    final_pos : ndarray, int64, shape (count_extracted,)
        Final row of every patch of the unshuffled order, or -1 (dropped).
    block : int
        Rows per bucket (a multiple of ``chunk_rows``, or all of them).
    shapes : dict of str to tuple
        ``{'data': (C, S, S), 'label': (C, L, L)}``, each row's shape.
    final_path : str
        The HDF5 file (closed by h5py; written here with ``pwrite``).
    chunk_offsets : dict of str to ndarray of int64
        File offset of every chunk of each dataset, in row order.
    chunk_rows : int
        Rows per chunk.
    slots_path : str
        Scratch file (empty): the final row each slot holds, int64.
    taken : multiprocessing Array of int64, one per bucket, zeros
        Slots taken in each bucket, shared by the workers.

    The object goes to each worker process once; :meth:`put`, :meth:`flush` and
    :meth:`assemble` run there.
    """

    def __init__(self, final_pos, block, shapes, final_path, chunk_offsets, chunk_rows,
                 slots_path, taken):
        self.final_pos, self.block, self.shapes = final_pos, block, shapes
        self.final_path, self.chunk_offsets, self.chunk_rows = final_path, chunk_offsets, chunk_rows
        self.slots_path, self.taken = slots_path, taken
        self.n = int((final_pos >= 0).sum())
        self.row_bytes = {k: 4 * int(np.prod(v)) for k, v in shapes.items()}
        self._stage = self._fill = self._block = None   # this process's buffers

    def rows_in(self, b):
        """Rows of the final order in bucket ``b``."""
        return min(self.block, self.n - b * self.block)

    # -- first pass: patches into their buckets, while they are cut ---------------------

    def put(self, data, label, first):
        """Stage an image's patches, unshuffled indices ``first`` on, for their buckets.

        Staged rows reach the file at :meth:`flush`, or when the stage is full.
        (An image that gives more or fewer patches than its place was given for
        lands in wrong rows: the writer then cuts everything again.)
        """
        rows = self.final_pos[first:first + len(data)]
        keep = np.flatnonzero(rows >= 0)
        stage = self._staging()
        for lo in range(0, len(keep), len(stage["row"])):
            take = keep[lo:lo + len(stage["row"])]
            if self._fill + len(take) > len(stage["row"]):
                self.flush()
            at = slice(self._fill, self._fill + len(take))
            stage["row"][at], stage["data"][at], stage["label"][at] = (
                rows[take], data[take], label[take])
            self._fill += len(take)

    def _staging(self):
        """This process's stage (half of STAGE_BYTES, and as much to sort it into)."""
        if self._stage is None:
            per = 8 + sum(self.row_bytes.values())
            rows = max(1, STAGE_BYTES // 2 // per)
            self._stage, self._sorted = (
                {"row": np.empty(rows, np.int64),
                 **{k: np.empty((rows,) + v, np.float32) for k, v in self.shapes.items()}}
                for _ in range(2))
            self._fill = 0
        return self._stage

    def flush(self):
        """Write every staged row to the next free slots of its bucket."""
        if not self._fill:
            return
        bucket = self._stage["row"][:self._fill] // self.block
        order = np.argsort(bucket, kind="stable")
        grouped = {k: np.take(a[:self._fill], order, axis=0, out=self._sorted[k][:self._fill])
                   for k, a in self._stage.items()}
        bucket = bucket[order]
        self._fill = 0
        edges = (np.flatnonzero(np.diff(bucket)) + 1).tolist()
        with _Files(self) as files:
            for lo, hi in zip([0] + edges, edges + [len(bucket)]):
                b = int(bucket[lo])
                with self.taken.get_lock():
                    at = int(self.taken[b])
                    self.taken[b] = at + hi - lo
                # More than the bucket holds only when a header lied (then all is redone).
                hi = min(hi, lo + max(0, self.rows_in(b) - at))
                start = b * self.block + at
                files.write_rows(start, {k: grouped[k][lo:hi] for k in self.shapes})
                pwrite_all(files.slots, memoryview(grouped["row"][lo:hi]).cast("B"), start * 8)

    # -- second pass: each bucket sorted in place ---------------------------------------

    def assemble(self, b):
        """Read bucket ``b`` and which final row each of its slots holds, put its rows in
        order and write them back. Returns the number of rows."""
        start, m = b * self.block, self.rows_in(b)
        if int(self.taken[b]) != m:
            raise OSError(f"bucket {b} of {self.final_path} holds {int(self.taken[b])} rows, "
                          f"not {m}")
        if self._block is None:
            self._block = [{k: np.empty((self.block,) + v, np.float32)
                            for k, v in self.shapes.items()} for _ in range(2)]
        got, ordered = ({k: a[:m] for k, a in s.items()} for s in self._block)
        with _Files(self) as files:
            at = np.empty(m, np.int64)
            pread_into(files.slots, memoryview(at).cast("B"), start * 8)
            at -= start
            files.read_rows(start, got)
            for k in self.shapes:
                ordered[k][at] = got[k]
            files.write_rows(start, ordered)
        return m


class _Files:
    """The output and the slots file, open for one flush or one bucket."""

    def __init__(self, buckets):
        self.b = buckets

    def __enter__(self):
        self.final = os.open(self.b.final_path, os.O_RDWR)
        try:
            self.slots = os.open(self.b.slots_path, os.O_RDWR)
        except OSError:
            os.close(self.final)
            raise
        return self

    def __exit__(self, *exc):
        os.close(self.final)
        os.close(self.slots)

    def _runs(self, start, n):
        """``(first row, rows)`` of the runs of rows ``start:start + n`` within one chunk."""
        cr, row, end = self.b.chunk_rows, start, start + n
        while row < end:
            run = min(end, (row // cr + 1) * cr) - row
            yield row, run
            row += run

    def _each(self, start, rows, io):
        n = len(next(iter(rows.values())))
        for r, run in self._runs(start, n):
            for k, a in rows.items():
                size = self.b.row_bytes[k]
                offset = int(self.b.chunk_offsets[k][r // self.b.chunk_rows]) + \
                    (r % self.b.chunk_rows) * size
                io(self.final, memoryview(a[r - start:r - start + run]).cast("B"), offset)

    def write_rows(self, start, rows):
        """Write ``rows`` (``{dataset: array}``) to the final rows ``start`` on."""
        self._each(start, rows, pwrite_all)

    def read_rows(self, start, into):
        """Read the final rows ``start`` on into ``into`` (``{dataset: array}``)."""
        self._each(start, into, pread_into)
