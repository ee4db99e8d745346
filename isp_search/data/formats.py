"""Data-set formats (a registry): where each split's RAW files and RGB photos live and how they pair up.

- ``zrr`` (Zurich RAW-to-RGB): ``{split}/huawei_raw/{i}.png`` + ``{split}/canon/{i}.jpg``; the real set has train
  and test only (val is carved from train), a ``val/`` folder in the same layout is used when present.
- ``mai2022`` (Fujifilm UltraISP): ``{split}/mediatek_raw/{i}.png`` + ``{split}/fujifilm/{i}.png``; the published
  val is raw-only (no ``fujifilm/``), so val/test are carved from train unless paired folders exist.
- ``folder`` (a user's phone): ``{split}/raw/*.{dng,png}`` + ``{split}/rgb/*.{png,jpg,jpeg}``; train is unpaired
  (any RGB photos, any count), val/test (optional) are paired by file name.

Integer file names sort numerically, others lexicographically after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from isp_search.errors import UserError
from isp_search.registry import Registry

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SampleRef:
    """One RAW file and, when the data set has it, the same scene's RGB photo."""

    id: int | str
    raw_path: Path
    rgb_path: Path | None


@dataclass(frozen=True)
class SplitListing:
    """The samples of one split folder plus the RGB photos an unpaired pairing mode may draw targets from."""

    split: str
    samples: tuple[SampleRef, ...]
    rgb_pool: tuple[Path, ...]

    @property
    def paired(self) -> bool:
        return bool(self.samples) and all(s.rgb_path is not None for s in self.samples)

    def select(self, ids: list[int | str] | tuple[int | str, ...]) -> "SplitListing":
        """The listing restricted to ``ids`` (in the given order); the pool follows the samples when paired."""
        by_id = {s.id: s for s in self.samples}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(f"split {self.split!r} has no sample(s) {missing[:5]} (recorded ids no longer on disk?)")
        samples = tuple(by_id[i] for i in ids)
        pool = tuple(s.rgb_path for s in samples if s.rgb_path is not None) if self.paired else self.rgb_pool
        return SplitListing(self.split, samples, pool)


def sort_key(stem: str) -> tuple[int, int, str]:
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def file_id(stem: str) -> int | str:
    return int(stem) if stem.isdigit() else stem


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise UserError(f"two files share the name {p.stem!r}: {stems[p.stem]} and {p}")
        stems[p.stem] = p
    return sorted(files, key=lambda p: sort_key(p.stem))


@dataclass(frozen=True)
class DataFormat:
    """A directory layout: ``{root}/{split}/{raw_dir}`` beside ``{root}/{split}/{rgb_dir}``."""

    name: str
    raw_dir: str
    rgb_dir: str
    raw_suffixes: tuple[str, ...]
    rgb_suffixes: tuple[str, ...]
    train_paired: bool
    """Whether the train split pairs RAW and RGB by file name (``folder`` trains unpaired)."""
    description: str

    def has_split(self, root: str | Path, split: str) -> bool:
        return (Path(root) / split / self.raw_dir).is_dir()

    def list_split(self, root: str | Path, split: str) -> SplitListing:
        """List one split; a missing counterpart in a split that has both folders is a UserError naming it."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        base = Path(root) / split
        raw_dir, rgb_dir = base / self.raw_dir, base / self.rgb_dir
        if not raw_dir.is_dir():
            raise UserError(f"{self.name} data set has no {split} RAW folder: {raw_dir}")
        raws = _files(raw_dir, self.raw_suffixes)
        rgbs = _files(rgb_dir, self.rgb_suffixes) if rgb_dir.is_dir() else []
        if split == "train" and not self.train_paired:
            samples = tuple(SampleRef(file_id(p.stem), p, None) for p in raws)
            return SplitListing(split, samples, tuple(rgbs))
        if not rgb_dir.is_dir():  # raw-only split (e.g. the published MAI 2022 val)
            return SplitListing(split, tuple(SampleRef(file_id(p.stem), p, None) for p in raws), ())
        rgb_by_stem = {p.stem: p for p in rgbs}
        raw_stems = {p.stem for p in raws}
        for p in raws:
            if p.stem not in rgb_by_stem:
                raise UserError(f"missing RGB counterpart for {p}: expected {rgb_dir / p.stem}{self.rgb_suffixes[0]}")
        for p in rgbs:
            if p.stem not in raw_stems:
                raise UserError(f"missing RAW counterpart for {p}: expected {raw_dir / p.stem}{self.raw_suffixes[0]}")
        samples = tuple(SampleRef(file_id(p.stem), p, rgb_by_stem[p.stem]) for p in raws)
        return SplitListing(split, samples, tuple(s.rgb_path for s in samples))  # type: ignore[misc]


FORMATS: Registry[DataFormat] = Registry("data format")
FORMATS.add("zrr", DataFormat("zrr", "huawei_raw", "canon", (".png",), (".jpg", ".jpeg"), True,
                              "Zurich RAW-to-RGB: {train,test}/huawei_raw/{i}.png + canon/{i}.jpg"))
FORMATS.add("mai2022", DataFormat("mai2022", "mediatek_raw", "fujifilm", (".png",), (".png",), True,
                                  "Fujifilm UltraISP: {train,val,test}/mediatek_raw/{i}.png + fujifilm/{i}.png"))
FORMATS.add("folder", DataFormat("folder", "raw", "rgb", (".dng", ".png"), (".png", ".jpg", ".jpeg"), False,
                                 "your phone: {split}/raw/*.dng|png + {split}/rgb/*.png|jpg (train unpaired)"))


def get_format(name: str) -> DataFormat:
    return FORMATS.get(name)
