"""The band-by-band PNG writer (srcnn_theano.image.png) and image_writer around it."""
import io
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from srcnn_theano.errors import SRCNNError
from srcnn_theano.image import png
from srcnn_theano.image.io import Metadata, image_writer, read_photo, write_image

CASES = [((9, 13), np.uint8, "L"), ((9, 13, 2), np.uint8, "LA"), ((9, 13, 3), np.uint8, "RGB"),
         ((9, 13, 4), np.uint8, "RGBA"), ((9, 13), np.uint16, "I;16")]


def _image(shape, dtype, seed=0):
    peak = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, peak + 1, shape).astype(dtype)


@pytest.mark.parametrize("shape,dtype,mode", CASES, ids=[c[2] for c in CASES])
def test_pillow_reads_back_every_pixel(tmp_path, shape, dtype, mode):
    arr = _image(shape, dtype)
    write_image(str(tmp_path / "a.png"), arr)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == mode and im.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.array(im), arr)


def test_sixteen_bit_colour_keeps_sixteen_bits(tmp_path):
    import cv2

    arr = _image((7, 5, 3), np.uint16)
    write_image(str(tmp_path / "c.png"), arr)
    back = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(back, arr)


def test_bands_of_any_size_give_the_same_file(tmp_path, monkeypatch):
    """Rows handed over in uneven bands, and split internally into small ones, encode
    the same pixels: each band is filtered against the last row of the band before."""
    arr = _image((50, 31, 3), np.uint8, seed=1)
    monkeypatch.setattr(png, "_BAND_BYTES", 200)        # ~2 rows per internal band
    with image_writer(str(tmp_path / "b.png"), arr.shape, arr.dtype) as write:
        for a, b in ((0, 1), (1, 18), (18, 19), (19, 50)):
            write(arr[a:b])
    np.testing.assert_array_equal(read_photo(str(tmp_path / "b.png"))[0], arr)


def test_rows_are_up_filtered_in_one_zlib_stream():
    buf = io.BytesIO()
    arr = _image((4, 3), np.uint8)
    with png.PNGWriter(buf, arr.shape, arr.dtype) as w:
        w.write(arr)
    data = buf.getvalue()
    idat, i = b"", 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        i += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(4, 4)
    assert (raw[:, 0] == 2).all()                     # filter type "Up" on every row
    np.testing.assert_array_equal(raw[1:, 1:], arr[1:] - arr[:-1])


def test_metadata_chunks_are_what_pillow_reads(tmp_path):
    icc = bytes(range(256)) * 3
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    arr = _image((6, 8, 3), np.uint8)
    write_image(str(tmp_path / "m.png"), arr, Metadata(icc, exif))
    back, meta = read_photo(str(tmp_path / "m.png"))
    np.testing.assert_array_equal(back, arr)
    assert meta.icc_profile == icc
    assert meta.exif[0x010F] == "Camera maker"


def test_an_interrupted_write_leaves_no_file(tmp_path):
    out = tmp_path / "x.png"
    with pytest.raises(KeyboardInterrupt):
        with image_writer(str(out), (10, 4), np.uint8) as write:
            write(np.zeros((5, 4), np.uint8))
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_missing_rows_are_an_error_and_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match="5 of the image's 10 rows"):
        with image_writer(str(tmp_path / "x.png"), (10, 4), np.uint8) as write:
            write(np.zeros((5, 4), np.uint8))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="do not fit"):
        with png.PNGWriter(io.BytesIO(), (10, 4), np.uint8) as w:
            w.write(np.zeros((5, 3), np.uint8))


def test_a_failing_disk_is_reported_with_the_file_name(tmp_path, monkeypatch):
    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        with png.PNGWriter(Full(), (10, 4), np.uint8) as w:
            w.write(np.zeros((10, 4), np.uint8))
    # through image_writer: a one-line SRCNNError naming the output, nothing left behind
    def full(self, rows, previous):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(png.PNGWriter, "_encode", full)
    with pytest.raises(SRCNNError, match=r"cannot write .*y\.png: No space left on device"):
        write_image(str(tmp_path / "y.png"), np.zeros((3, 3), np.uint8))
    assert os.listdir(tmp_path) == []
