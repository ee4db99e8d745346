"""The natural colour photos that installed packages ship in their wheels: the embedded data set's sources.

Only natural, normally exposed colour photographs are used. Every photo below ships inside a package this project
already installs (nothing is downloaded), and each licence allows reuse:

==============  =====================================================  ==============================================
name            shipped by (file)                                      licence
==============  =====================================================  ==============================================
astronaut       scikit-image (data/astronaut.png), NASA                public domain
chelsea         scikit-image (data/chelsea.png), Stefan van der Walt   CC0
coffee          scikit-image (data/coffee.png), Rachel Michetti        CC0
motorcycle      scikit-image (data/motorcycle_left.png), Middlebury    redistributed by scikit-image; cite Scharstein
                2014 stereo benchmark                                  et al. 2014 (GCPR)
grace_hopper    matplotlib (mpl-data/sample_data/grace_hopper.jpg)     public domain (U.S. Navy photograph)
kodim03/04/06/  pyiqa 0.1.16 (ResultsCalibra/ref_dir/I03.bmp ...: the  Kodak Lossless True Color Image Suite,
08/19           TID2013 references, i.e. Kodak PhotoCD images)         released by Kodak for unrestricted use
==============  =====================================================  ==============================================

Left out on purpose (each made the old set's targets unlike a phone camera's):
astronomy (``hubble_deep_field``), medical and microscopy (``retina``, ``immunohistochemistry``, ``cell``,
``microaneurysms``), a night scene (``rocket``: mean 0.26, a low-key exposure), grayscale photos and textures
(``camera``, ``moon``, ``coins``, ``brick``, ``grass``, ``gravel``, ``page``, ``text``, ``lfw_subset``), synthetic or
graphic images (``chessboard_*``, ``logo``, ``phantom``, ``horse``, ``color``, matplotlib's ``logo2`` and
``Minduka_Present_Blue_Pack``, colour-science's plots and plates), the right view of the motorcycle stereo pair (the
same scene as the left), pyiqa's distorted copies (``ResultsCalibra/dist_dir``) and its test frames (SPAQ and video
frames: no clear licence). scikit-learn's ``china.jpg`` and ``flower.jpg`` (CC-BY) are not used: scikit-learn is
not a dependency, and a set built from whatever happens to be installed would differ between machines.

The splits are fixed lists of photos, disjoint, chosen so that the splits' mean RGB agree (``PHOTO_SPLITS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from isp_search.errors import UserError


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # the distribution that ships the file
    file: str  # path inside that distribution (skimage: a skimage.data loader name)
    licence: str


PHOTOS: dict[str, Photo] = {p.name: p for p in (
    Photo("astronaut", "scikit-image", "astronaut", "public domain (NASA)"),
    Photo("chelsea", "scikit-image", "chelsea", "CC0 (Stefan van der Walt)"),
    Photo("coffee", "scikit-image", "coffee", "CC0 (Rachel Michetti)"),
    Photo("motorcycle", "scikit-image", "stereo_motorcycle", "Middlebury 2014 stereo, as redistributed by scikit-image"),
    Photo("grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "public domain (U.S. Navy)"),
    *(Photo(f"kodim{i}", "pyiqa", f"ResultsCalibra/ref_dir/I{i}.bmp", "Kodak PhotoCD suite, unrestricted use")
      for i in ("03", "04", "06", "08", "19")),
)}

# Disjoint by photo. Of the 1,260 ways to hold out 2 + 2 of the 10 photos, this one keeps the mean R, G, B of val's
# and test's 128-px random crops within 0.04 of train's, and their mean brightness within 0.01 (150 crops per
# photo: train 0.52/0.43/0.33 R/G/B, val 0.53/0.39/0.34, test 0.54/0.40/0.32).
PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("coffee", "grace_hopper", "kodim03", "kodim06", "kodim08", "kodim19"),
    "val": ("astronaut", "kodim04"),
    "test": ("chelsea", "motorcycle"),
}

# Bundled images that are not natural, normally exposed colour photos (kept here so a test can check none is used).
NOT_PHOTOGRAPHIC = ("hubble_deep_field", "retina", "immunohistochemistry", "cell", "microaneurysms", "rocket",
                    "camera", "moon", "coins", "brick", "grass", "gravel", "page", "text", "horse", "logo",
                    "chessboard_RGB", "chessboard_GRAY", "phantom", "Minduka_Present_Blue_Pack", "logo2")


def photo_file(photo: Photo) -> Path:
    """The photo's file inside its installed distribution (UserError naming the package when it is missing)."""

    try:
        dist = metadata.distribution(photo.package)
    except metadata.PackageNotFoundError:
        raise UserError(f"photo {photo.name!r} ships with {photo.package}, which is not installed "
                        "(pip install -r requirements/base.txt)") from None
    path = Path(str(dist.locate_file(photo.file)))
    if not path.is_file():
        raise UserError(f"photo {photo.name!r}: {path} is missing from the installed {photo.package} "
                        f"{dist.version}; reinstall it (pip install -r requirements/base.txt)")
    return path


@cache
def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` as float64 RGB (H, W, 3) in [0, 1] (read-only; cached)."""
    photo = PHOTOS.get(name)
    if photo is None:
        raise UserError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}")
    if photo.package == "scikit-image":
        img = getattr(skimage.data, photo.file)()
        if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity): the left view only
            img = img[0]
    else:

        with Image.open(photo_file(photo)) as im:
            img = np.asarray(im.convert("RGB"))
    out = np.asarray(img, np.float64)[..., :3] / 255.0
    out.flags.writeable = False
    return out
