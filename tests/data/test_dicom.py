"""DICOM reading: display convention across encodings, windowing, bit depth, bad files."""

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from models.data.dicom import contrast, read_dicom
from models.data.errors import DicomError
from models.data.reading import DataQuirkWarning


@pytest.fixture
def image(helpers):
    return helpers.phantom(64, 48, "L", boxes=[(8, 20, 16, 30)])


def test_monochrome1_and_2_give_the_same_display_image(tmp_path, helpers, image):
    stored = helpers.to_stored(image, bits=12)
    mono2 = helpers.write_dicom(tmp_path / "m2.dicom", stored, bits_stored=12)
    mono1 = helpers.write_dicom(
        tmp_path / "m1.dicom", (4095 - stored).astype(np.uint16), bits_stored=12, photometric="MONOCHROME1"
    )
    a, b = read_dicom(mono2), read_dicom(mono1)
    assert (a.photometric, b.photometric) == ("MONOCHROME2", "MONOCHROME1")
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1e-6)
    # bright = dense: the lesion is brighter than tissue, tissue brighter than air
    assert a.pixels[25, 12] == pytest.approx(1.0) and a.pixels[32, 2] > 0.3 and a.pixels[0, 47] == 0.0
    assert a.pixels.dtype == np.float32 and a.pixels.shape == (64, 48)


@pytest.mark.parametrize("compression", ["jpeg2000", "rle"])
def test_lossless_compressed_round_trip(tmp_path, helpers, image, compression):
    stored = helpers.to_stored(image)
    plain = read_dicom(helpers.write_dicom(tmp_path / "plain.dicom", stored))
    packed_path = helpers.write_dicom(tmp_path / "packed.dicom", stored, compression=compression)
    packed = read_dicom(packed_path)
    assert packed.transfer_syntax != plain.transfer_syntax
    assert pydicom.dcmread(packed_path).file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(packed.pixels, plain.pixels)


def test_voi_window_applied_when_present_and_optional(tmp_path, helpers):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))  # 0 .. 4032
    center, width = 2048.0, 1024.0
    path = helpers.write_dicom(tmp_path / "w.dicom", ramp, bits_stored=12, window=(center, width))
    windowed = read_dicom(path)
    assert windowed.windowed
    # DICOM linear window, then min-max: the ramp spans both ends of the window, so no rescale
    expected = np.clip((ramp - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(windowed.pixels, expected, atol=1e-4)
    assert (windowed.pixels == 0).sum() > 8 and (windowed.pixels == 1).sum() > 8  # clipped both ends

    raw = read_dicom(path, apply_window=False)
    assert not raw.windowed
    np.testing.assert_allclose(raw.pixels, ramp / ramp.max(), atol=1e-6)


def test_no_window_tag_means_min_max_only(tmp_path, helpers):
    ramp = np.tile(np.arange(100, 4000, 50, dtype=np.uint16), (4, 1))
    result = read_dicom(helpers.write_dicom(tmp_path / "n.dicom", ramp, bits_stored=12))
    assert not result.windowed
    np.testing.assert_allclose(result.pixels, (ramp - 100.0) / (ramp.max() - 100.0), atol=1e-6)


def _rewrite_as_8_bit(source, target):
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array.astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = pixels.tobytes()
    ds.save_as(target, enforce_file_format=True)
    return target


def test_8_bit_and_16_bit_files_read_alike(tmp_path, helpers, image):
    eight = helpers.to_stored(image, bits=8)
    source = helpers.write_dicom(tmp_path / "src.dicom", eight, bits_stored=8)
    file8 = _rewrite_as_8_bit(source, tmp_path / "8bit.dicom")
    file16 = helpers.write_dicom(tmp_path / "16bit.dicom", (eight.astype(np.uint32) * 257).astype(np.uint16))
    a, b = read_dicom(file8), read_dicom(file16)
    assert pydicom.dcmread(file8).BitsAllocated == 8
    assert (a.bits_stored, b.bits_stored) == (8, 16)
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1e-6)


def test_tags_are_reported(tmp_path, helpers, image):
    path = helpers.write_dicom(tmp_path / "t.dicom", helpers.to_stored(image), laterality="R", view_position="MLO")
    result = read_dicom(path)
    assert (result.laterality, result.view_position) == ("R", "MLO")


def test_not_a_dicom_file(tmp_path):
    path = tmp_path / "notes.dicom"
    path.write_text("study_id,image_id\n1,2\n")
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    message = str(info.value)
    assert str(path) in message and "not a DICOM file" in message and "DICOM Part 10" in message


@pytest.mark.filterwarnings("ignore:End of file reached")  # pydicom's own warning
@pytest.mark.parametrize("compression", ["none", "rle"])
def test_truncated_file(tmp_path, helpers, image, compression):
    full = helpers.write_dicom(tmp_path / "full.dicom", helpers.to_stored(image), compression=compression)
    data = full.read_bytes()
    cut = tmp_path / "cut.dicom"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(DicomError) as info:
        read_dicom(cut)
    message = str(info.value)
    assert str(cut) in message and "truncated" in message


def test_missing_pixel_data(tmp_path, helpers, image):
    path = helpers.write_dicom(tmp_path / "img.dicom", helpers.to_stored(image))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    message = str(info.value)
    assert str(path) in message and "no PixelData" in message and "expected an image object" in message


def test_transfer_syntax_without_a_codec_names_the_syntax(tmp_path, helpers, image):
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    path = helpers.write_dicom(tmp_path / "img.dicom", helpers.to_stored(image))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no pixel-data plugin
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    message = str(info.value)
    assert str(path) in message and "1.2.840.10008.1.2.4.100" in message and "pydicom has no decoder" in message


def test_decode_failure_is_one_line_naming_what_was_tried():
    path = get_testdata_file("JPEG-lossy.dcm")  # 12-bit JPEG Extended that pydicom's own decoders refuse
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    message = str(info.value)
    assert "\n" not in message and "1.2.840.10008.1.2.4.51 (JPEG Extended (Process 2 and 4))" in message
    assert "every installed decoder (" in message and "pylibjpeg" in message
    assert "install" not in message.replace("installed", "")  # never asks for what is already there


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_saturating_window_falls_back_to_the_stored_range(tmp_path, helpers, image, photometric):
    stored = helpers.to_stored(image, bits=12)
    display = read_dicom(helpers.write_dicom(tmp_path / "plain.dicom", stored, bits_stored=12)).pixels
    if photometric == "MONOCHROME1":
        stored = (4095 - stored).astype(np.uint16)
    path = helpers.write_dicom(tmp_path / "w.dicom", stored, bits_stored=12, photometric=photometric,
                               window=(60000.0, 10.0))  # far above every stored value: all one level
    with pytest.warns(DataQuirkWarning, match="VOI window leaves 0.0% of pixels"):
        result = read_dicom(path)
    assert not result.windowed
    np.testing.assert_allclose(result.pixels, display, atol=1e-6)  # dense stays bright in both encodings


def test_saturating_window_in_a_public_file():
    with pytest.warns(DataQuirkWarning, match="using the stored value range"):
        result = read_dicom(get_testdata_file("dicomdirtests/77654033/CT2/17166"))
    assert contrast(result.pixels) > 0.5


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_a_flat_image_reads_as_zeros_in_both_encodings(tmp_path, helpers, photometric):
    flat = np.full((8, 6), 700, dtype=np.uint16)
    result = read_dicom(helpers.write_dicom(tmp_path / "f.dicom", flat, bits_stored=12, photometric=photometric))
    assert not result.pixels.any()


def test_huge_dimensions_are_refused_before_decoding(tmp_path, helpers, image):
    path = helpers.write_dicom(tmp_path / "img.dicom", helpers.to_stored(image))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60_000, 60_000  # 3.6 G pixels: would exhaust memory if decoded
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    message = str(info.value)
    assert str(path) in message and "60000 x 60000" in message
