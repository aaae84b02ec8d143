"""Specification of covidcxr.io: decoding radiographs and refusing bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from covidcxr.errors import InvalidImageError, UnknownLabelError
from covidcxr.io import read_image, read_xray, sniff_format


def test_8bit_gray_png_round_trips_exactly(make: Any) -> None:
    pixels = make.gradient()
    decoded = read_image(make.encode(pixels))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, pixels)


def test_16bit_png_keeps_its_dynamic_range(make: Any) -> None:
    pixels = make.gradient(dtype=np.uint16)
    decoded = read_image(make.encode(pixels))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, pixels)


def test_rgb_png_of_a_gray_image_decodes_to_the_same_gray(make: Any) -> None:
    gray = make.gradient()
    decoded = read_image(make.encode(np.dstack([gray, gray, gray])))
    np.testing.assert_array_equal(decoded, gray)


def test_rgba_png_drops_alpha_and_becomes_2d(make: Any) -> None:
    gray = make.gradient()
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 128)])
    decoded = read_image(make.encode(rgba))
    assert decoded.shape == gray.shape
    np.testing.assert_array_equal(decoded, gray)


def test_jpeg_decodes_to_2d_uint8_close_to_the_original(make: Any) -> None:
    pixels = make.gradient()
    decoded = read_image(make.encode(pixels, ".jpg"))
    assert decoded.dtype == np.uint8
    assert decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels.astype(int)).mean() < 6


def test_format_is_sniffed_from_content_not_the_file_name(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "really-a-jpeg.png"
    path.write_bytes(make.encode(make.gradient(), ".jpg"))
    assert read_image(path).shape == (64, 64)
    assert read_xray(path).meta["format"] == "jpeg"


def test_zero_byte_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"empty\.png: the file is empty") as info:
        read_image(path)
    assert info.value.source == str(path)


def test_text_named_png_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("patient notes, not pixels")
    with pytest.raises(InvalidImageError, match=r"notes\.png: not a PNG, JPEG, WebP or DICOM"):
        read_image(path)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_is_refused(make: Any, ext: str) -> None:
    data = make.encode(make.gradient(), ext)
    with pytest.raises(InvalidImageError, match="truncated"):
        read_image(data[: len(data) * 2 // 3], source=f"cut{ext}")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_a_complete_file_with_bytes_after_its_end_is_read(make: Any, ext: str) -> None:
    # Phones and some exporters append data after IEND / the end-of-image marker; the
    # picture is whole, and decoders ignore the rest. Cut short, it is still refused.
    pixels = make.gradient()
    data = make.encode(pixels, ext)
    trailer = b"SEFH" + bytes(range(200))
    np.testing.assert_array_equal(read_image(data + trailer), read_image(data))
    with pytest.raises(InvalidImageError, match="truncated"):
        read_image(data[: len(data) * 2 // 3] + trailer, source=f"cut{ext}")


def test_a_jpeg_cut_after_its_exif_thumbnail_is_still_truncated(make: Any) -> None:
    # The thumbnail in APP1 ends with its own end-of-image marker, before the main scan.
    thumbnail = make.encode(make.gradient(16, 16), ".jpg")
    app1 = b"Exif\x00\x00" + thumbnail
    main = make.encode(make.gradient(), ".jpg")
    data = main[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + main[2:]
    assert read_image(data).shape == (64, 64)
    with pytest.raises(InvalidImageError, match="truncated JPEG"):
        read_image(data[: len(data) - 200], source="cut.jpg")


def test_missing_file_is_an_invalid_image_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match=r"nowhere\.png: no such file"):
        read_image(tmp_path / "nowhere.png")


def test_image_too_small_to_be_a_radiograph_is_refused(make: Any) -> None:
    with pytest.raises(InvalidImageError, match="too small to be a radiograph"):
        read_image(make.encode(np.zeros((16, 64), np.uint8)), source="thumb.png")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 1-row-per-chunk PNG header that declares 100,000 x 100,000 pixels: tiny file, huge
    # image. It must be refused from the header, without allocating 10 GB.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        read_image(bomb, source="bomb.png")


def test_pixel_limit_is_configurable(make: Any) -> None:
    data = make.encode(make.gradient())
    with pytest.raises(InvalidImageError, match="more than the limit of 1,000"):
        read_image(data, max_pixels=1000)


def test_corrupt_image_data_is_refused(make: Any) -> None:
    data = bytearray(make.encode(make.gradient()))
    data[40:200] = b"\x00" * 160  # destroy the start of the compressed stream
    with pytest.raises(InvalidImageError, match="corrupt"):
        read_image(bytes(data), source="corrupt.png")


def test_sniff_tells_the_four_formats_apart(make: Any) -> None:
    assert sniff_format(make.encode(make.gradient())) == "png"
    assert sniff_format(make.encode(make.gradient(), ".jpg")) == "jpeg"
    assert sniff_format(make.encode(make.gradient(), ".webp")) == "webp"
    assert sniff_format(make.dicom(make.gradient(dtype=np.uint16))) == "dicom"


@pytest.mark.parametrize("quality", [101, 80], ids=["lossless", "lossy"])
@pytest.mark.parametrize("name", ["scan.webp", "scan.jpg", "scan.png"])
def test_webp_decodes_whatever_the_file_is_named(
    make: Any, tmp_path: Path, name: str, quality: int
) -> None:
    # Public datasets ship WebP images under .jpg and .png names; the content decides.
    pixels = make.gradient(48, 40)
    ok, buffer = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, quality])
    assert ok
    path = tmp_path / name
    path.write_bytes(buffer.tobytes())
    xray = read_xray(path)
    assert xray.meta["format"] == "webp"
    assert xray.pixels.shape == (48, 40)
    assert xray.pixels.dtype == np.uint8
    if quality > 100:
        assert np.array_equal(xray.pixels, pixels)


def test_colour_webp_becomes_gray(make: Any) -> None:
    gray = make.gradient()
    data = cv2.imencode(".webp", np.dstack([gray, gray, gray]), [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert np.array_equal(read_image(data[1].tobytes()), gray)


def test_truncated_webp_is_refused(make: Any) -> None:
    data = cv2.imencode(".webp", make.gradient())[1].tobytes()
    with pytest.raises(InvalidImageError, match=r"cut\.webp: truncated WebP"):
        read_image(data[: len(data) // 2], source="cut.webp")


def test_webp_bomb_is_refused_from_its_header() -> None:
    # An extended (VP8X) WebP declaring a 16,000 x 16,000 canvas, with no pixel data.
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + bytes(4)
    body += (16_000 - 1).to_bytes(3, "little") + (16_000 - 1).to_bytes(3, "little")
    bomb = b"RIFF" + struct.pack("<I", len(body)) + body
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        read_image(bomb, source="bomb.webp", max_pixels=1_000_000)


def test_dicom_monochrome2_is_stretched_to_uint16(make: Any) -> None:
    pixels = make.gradient(dtype=np.uint16) // 16  # 12-bit data
    decoded = read_image(make.dicom(pixels))
    assert decoded.dtype == np.uint16
    assert decoded.min() == 0
    assert decoded.max() == 65535
    # A linear stretch keeps the order of the values.
    order = np.argsort(pixels, axis=None, kind="stable")
    assert np.all(np.diff(decoded.ravel()[order].astype(np.int64)) >= 0)


def test_signed_8bit_dicom_keeps_its_order_of_grey_levels(make: Any) -> None:
    # Cast to uint8, -32..31 became 224..255, 0..31: the darkest pixels turned bright.
    from pydicom import dcmread

    ramp = np.tile(np.arange(-32, 32, dtype=np.int8), (64, 1))
    data = make.dicom(ramp.view(np.uint8))
    dataset = dcmread(io.BytesIO(data))
    dataset.PixelRepresentation = 1
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    decoded = read_image(buffer.getvalue()).astype(np.int64)
    assert (np.diff(decoded[0]) > 0).all()


def _edited_dicom(data: bytes, **tags: Any) -> bytes:
    from pydicom import dcmread

    dataset = dcmread(io.BytesIO(data))
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
        if keyword == "PixelPaddingValue":
            dataset[keyword].VR = "US"  # "US or SS": the pixels are unsigned
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_display_tags_written_empty_count_as_absent(make: Any) -> None:
    # Refused before as "WindowWidth ... is not a number: None".
    pixels = make.gradient(dtype=np.uint16) // 16
    plain = read_image(make.dicom(pixels))
    blank_window = _edited_dicom(make.dicom(pixels, window=(2000.0, 1000.0)), WindowWidth=None)
    np.testing.assert_array_equal(read_image(blank_window), plain)
    blank_slope = _edited_dicom(make.dicom(pixels, slope=2.0, intercept=5.0), RescaleSlope=None)
    np.testing.assert_array_equal(read_image(blank_slope), plain)


def test_pixel_padding_is_left_out_of_the_stretch_and_shown_black(make: Any) -> None:
    # A detector's unexposed border stored as 4095 (PixelPaddingValue) once took part in
    # the stretch, squashing the anatomy (here 100..1100) into a quarter of the range.
    pixels = (make.gradient(dtype=np.uint16) // 64 + 100).astype(np.uint16)  # 100..1123
    padded = pixels.copy()
    padded[:, :8] = 4095
    data = _edited_dicom(make.dicom(padded), PixelPaddingValue=4095)
    decoded = read_image(data)
    assert (decoded[:, :8] == 0).all()
    inside = decoded[:, 8:]
    assert int(inside.min()) == 0
    assert int(inside.max()) == 65535


@pytest.mark.parametrize("cut", [153, 300, 700])
def test_a_truncated_or_garbled_dicom_is_an_invalid_image_naming_the_file(
    make: Any, cut: int
) -> None:
    # pydicom raised struct.error, NotImplementedError (unknown VR) or
    # BytesLengthException, lazily, so that on_error="skip" could not skip the file.
    data = make.dicom(make.gradient(dtype=np.uint16))
    garbled = bytearray(data[:cut])
    if cut == 700:
        garbled[140:148] = b"\x08\x00\x60\x00BS\x02\x00"  # a tag with an unknown VR
    with pytest.raises(InvalidImageError, match=r"scan\.dcm"):
        read_image(bytes(garbled), source="scan.dcm")


def test_dicom_monochrome1_is_inverted(make: Any) -> None:
    pixels = make.gradient(dtype=np.uint16) // 16
    mono2 = read_image(make.dicom(pixels, photometric="MONOCHROME2")).astype(np.int64)
    mono1 = read_image(make.dicom(pixels, photometric="MONOCHROME1")).astype(np.int64)
    np.testing.assert_array_equal(mono1, 65535 - mono2)


def test_dicom_rescale_slope_and_intercept_are_applied(make: Any) -> None:
    pixels = np.zeros((64, 64), np.uint16)
    pixels[:, 32:] = 100
    pixels[:32, :32] = 50
    # A negative slope reverses the order: stored 100 becomes the darkest value.
    decoded = read_image(make.dicom(pixels, slope=-2.0, intercept=1000.0))
    assert decoded[0, 40] == 0
    assert decoded[40, 0] == 65535
    assert 0 < decoded[0, 0] < 65535


def test_dicom_voi_window_clips_outside_the_window(make: Any) -> None:
    pixels = np.tile(np.arange(64, dtype=np.uint16) * 64, (64, 1))  # 0 .. 4032
    decoded = read_image(make.dicom(pixels, window=(2000.0, 1000.0))).astype(np.int64)
    below = decoded[:, pixels[0] < 1400]
    above = decoded[:, pixels[0] > 2600]
    assert np.all(below == below.min())
    assert np.all(above == above.max())
    inside = decoded[0, (pixels[0] > 1600) & (pixels[0] < 2400)]
    assert np.all(np.diff(inside) > 0)


def test_multi_frame_dicom_is_refused_clearly(make: Any) -> None:
    data = make.dicom(make.gradient(dtype=np.uint16), frames=3)
    with pytest.raises(InvalidImageError, match=r"cine\.dcm: multi-frame DICOM \(3 frames\)"):
        read_image(data, source="cine.dcm")


def test_truncated_dicom_is_refused(make: Any) -> None:
    data = make.dicom(make.gradient(dtype=np.uint16))
    with pytest.raises(InvalidImageError, match=r"cut\.dcm"):
        read_image(data[: len(data) - 2000], source="cut.dcm")


def test_read_xray_takes_patient_id_from_dicom(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    path.write_bytes(make.dicom(make.gradient(dtype=np.uint16), patient_id="PAT-42"))
    xray = read_xray(path, label="covid")
    assert xray.patient_id == "PAT-42"
    assert xray.label == "covid-19"
    assert xray.meta["dicom_modality"] == "DX"


def test_read_xray_rejects_unknown_labels(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(make.encode(make.gradient()))
    with pytest.raises(UnknownLabelError, match="tuberculosis"):
        read_xray(path, label="tuberculosis")


@pytest.mark.parametrize("slope", [0.0, float("nan")])
def test_dicom_with_a_degenerate_rescale_slope_is_refused_naming_the_tag(
    make: Any, slope: float
) -> None:
    data = make.dicom(make.gradient(dtype=np.uint16), slope=slope, intercept=100.0)
    with pytest.raises(InvalidImageError, match=r"flat\.dcm: RescaleSlope \(0028,1053\)"):
        read_image(data, source="flat.dcm")


@pytest.mark.parametrize("width", [0.0, float("nan")])
def test_dicom_with_a_degenerate_window_width_is_an_invalid_image(make: Any, width: float) -> None:
    data = make.dicom(make.gradient(dtype=np.uint16), window=(2000.0, width))
    with pytest.raises(InvalidImageError, match=r"win\.dcm: WindowWidth \(0028,1051\)"):
        read_image(data, source="win.dcm")


def test_dicom_voi_lut_shorter_than_its_descriptor_is_an_invalid_image(make: Any) -> None:
    import io

    import pydicom
    from pydicom.dataset import Dataset

    dataset = pydicom.dcmread(io.BytesIO(make.dicom(make.gradient(dtype=np.uint16))))
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.LUTData = np.arange(100, dtype=np.uint16).tobytes()
    dataset.VOILUTSequence = [lut]
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(InvalidImageError, match=r"lut\.dcm: VOILUTSequence item 0: LUTData"):
        read_image(buffer.getvalue(), source="lut.dcm")
