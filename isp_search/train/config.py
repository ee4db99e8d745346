"""The training config: one frozen dataclass per YAML section, read through :mod:`isp_search.configio`.

Loss multipliers default to ``None`` = "the mode's default" (1 for a term of the mode's loss set, 0 otherwise);
any multiplier set to 0 switches its term off. Relative data/checkpoint paths resolve against the config file's
folder and are stored absolute, so a resolved ``config.yaml`` in a run folder reads the same from anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping

from isp_search.configio import ConfigError, Source, build, load_yaml, parse_override, set_dotted, to_dict

MODES = ("pretrain", "paired_noadv", "paired", "unpaired")
GAN_MODES = ("paired", "unpaired")  # stages that need model.init_from (or model.allow_scratch)
# The paper's loss sets (docs/method.md §4.8): the terms a mode switches on by default.
MODE_TERMS: dict[str, tuple[str, ...]] = {
    "pretrain": ("content", "mse", "tv"),
    "paired_noadv": ("content", "lpips", "dists", "tv", "color"),
    "paired": ("content", "lpips", "dists", "tv", "color", "adv_relu1", "adv_relu4"),
    "unpaired": ("content", "adv_color", "adv_relu1", "adv_relu4", "tv"),
}
TERMS = ("content", "mse", "tv", "color", "lpips", "dists", "adv_color", "adv_relu1", "adv_relu4")
PAIRED_ONLY = ("color", "lpips", "dists")  # need the scene's own ground truth


def _pos(v: float) -> bool:
    return v > 0


def _nonneg(v: float) -> bool:
    return v >= 0


def _beta(v: float) -> bool:
    return 0 <= v < 1


POS = {"check": _pos, "valid": "a number > 0"}
NONNEG = {"check": _nonneg, "valid": "a number >= 0"}
BETA = {"check": _beta, "valid": "a number in [0, 1)"}


@dataclass(frozen=True)
class DataCfg:
    """Where the images come from."""

    root: str = "data/synth_mai2022"  # data set folder (relative: to the config file)
    format: str = "mai2022"  # zrr | mai2022 | folder
    synthetic: bool = False  # build the embedded synthetic set at ``root`` when it is missing
    pairing: Literal["paired", "shuffled", "disjoint"] | None = None  # None: paired, or shuffled for unpaired
    demosaicer: str = "menon2007"  # the content reference's demosaicer (a searched choice)
    patch_size: int | None = field(default=None, metadata={"check": lambda v: v > 0 and v % 4 == 0,
                                                           "valid": "a positive multiple of 4"})
    augment: bool = False  # CFA-safe flips/rotations
    splits: str | None = None  # split record file (relative: to the config file); None: carve in memory
    n_val: int | None = None  # carved validation images (None: the format's default)
    n_test: int | None = None  # carved test images (None: the format's default)
    workers: int = field(default=0, metadata=NONNEG)  # DataLoader worker processes
    eval_limit: int | None = field(default=None, metadata=POS)  # at most this many val/test images per evaluation
    packed: Literal["auto", True, False] = "auto"
    """Decoded images from a memory-mapped pack (isp_search.data.packed): auto uses one when it exists, true builds
    a missing one (~2 B per RAW + 3 per RGB pixel on disk), false decodes the image files every time."""
    cache_workers: int = field(default=0, metadata=NONNEG)
    """Processes that build a missing reference cache or pack (0: one per CPU core)."""


@dataclass(frozen=True)
class ModelCfg:
    """The generator."""

    arch: str = "efficient_isp"  # efficient_isp | robust_isp | rmfa_tiny
    preset: str | None = None  # normalisation preset; None: the backbone's own
    init_from: str | None = None  # checkpoint or run folder to start from (e.g. the pretrain run)
    allow_scratch: bool = False  # a paired/unpaired (GAN) stage may start from a random generator


@dataclass(frozen=True)
class LossesCfg:
    """Multiplier m_i per generator term (DLA gives each term gradient norm m_i); None: the mode's default."""

    content: float | None = field(default=None, metadata=NONNEG)
    mse: float | None = field(default=None, metadata=NONNEG)
    tv: float | None = field(default=None, metadata=NONNEG)
    color: float | None = field(default=None, metadata=NONNEG)
    lpips: float | None = field(default=None, metadata=NONNEG)
    dists: float | None = field(default=None, metadata=NONNEG)
    adv_color: float | None = field(default=None, metadata=NONNEG)
    adv_relu1: float | None = field(default=None, metadata=NONNEG)
    adv_relu4: float | None = field(default=None, metadata=NONNEG)
    r_gamma: float = field(default=1000.0, metadata=NONNEG)
    """R1/R2 = (gamma/2)·E||grad D||²; 1000 reproduces the authors' effective weight 500 (gamma 10 with a hidden
    x100; docs/method.md §4.7)."""
    dla: bool = True  # Dynamic Loss Adaptation; False: plain sum of m_i·L_i
    dla_eps: float = field(default=1e-8, metadata=POS)
    content_space: Literal["rgb", "lab_l"] | None = None
    """VGG content term on RGB or on LAB L (/100, 3 copies); None: LAB L for pretrain/unpaired, RGB for paired.
    Paper Eq. 12 pretrains with RGB (paper configs set it); the content term of pretrain and unpaired always
    compares with the demosaiced reference, of the paired modes with the ground truth."""


@dataclass(frozen=True)
class FeaturesCfg:
    """The frozen feature networks."""

    vit_img_size: int = field(default=224, metadata={"check": lambda v: v > 0 and v % 16 == 0,
                                                     "valid": "a positive multiple of 16"})
    input: Literal["reference", "normalized"] = "reference"
    """reference: the authors' inputs (grayscale [0, 1] into AlexNet, blurred [0, 1] RGB into the ViT), on which
    their gamma and learning rates were tuned (docs/method.md §4.7); normalized: each network's own input
    normalisation."""
    cache_real: bool | Literal["auto"] = "auto"
    """Compute each training image's real-branch features (VGG/ViT/AlexNet on the real images) once and keep them
    memory-mapped on local disk (``$ISP_SEARCH_REAL_CACHE``); valid only for fixed real images (no data.augment,
    no data.patch_size, photos the size of the outputs). auto: on exactly where it is valid (the run's log says
    which); true: on, refused where invalid."""


@dataclass(frozen=True)
class OptimCfg:
    """Adam for the generator and for each discriminator group (color: ViT MLP; texture: relu1 + relu4 CNNs)."""

    g_lr: float = field(default=5e-4, metadata=POS)
    g_beta1: float = field(default=0.5, metadata=BETA)
    g_beta2: float = field(default=0.9, metadata=BETA)
    d_color_lr: float = field(default=1e-5, metadata=POS)
    d_color_beta1: float = field(default=0.5, metadata=BETA)
    d_color_beta2: float = field(default=0.9, metadata=BETA)
    d_color_every: int = field(default=10, metadata=POS)  # D step every n-th generator step
    d_texture_lr: float = field(default=1e-5, metadata=POS)
    d_texture_beta1: float = field(default=0.5, metadata=BETA)
    d_texture_beta2: float = field(default=0.9, metadata=BETA)
    d_texture_every: int = field(default=10, metadata=POS)
    d_clip: float | None = field(default=1.0, metadata=POS)  # D gradient-norm clip; None: off


@dataclass(frozen=True)
class RunCfg:
    """Budget, evaluation and device."""

    batch_size: int = field(default=32, metadata=POS)
    steps: int = field(default=1000, metadata=POS)
    eval_interval: int = field(default=250, metadata=POS)
    log_interval: int = field(default=10, metadata=POS)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA
    score_lpips_weight: float = field(default=10.0, metadata=NONNEG)
    """Joint validation objective ``score = psnr - w·lpips`` (higher is better; the search ranks by it)."""
    select_by: Literal["score", "psnr"] = "score"
    """What picks best.pt: the joint ``score`` or validation PSNR alone (the paper's selection, paper configs)."""
    progress: bool = True  # tqdm progress bar


@dataclass(frozen=True)
class TrainConfig:
    """A whole training config file."""

    mode: Literal["pretrain", "paired_noadv", "paired", "unpaired"] = "pretrain"
    backbone_weights: Literal["pretrained", "random"] = "pretrained"  # frozen feature networks
    name: str = ""
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    losses: LossesCfg = field(default_factory=LossesCfg)
    features: FeaturesCfg = field(default_factory=FeaturesCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: RunCfg = field(default_factory=RunCfg)

    def multiplier(self, term: str) -> float:
        """m_i of ``term``: the configured value, else 1 for the mode's terms and 0 otherwise."""
        m = getattr(self.losses, term)
        return (1.0 if term in MODE_TERMS[self.mode] else 0.0) if m is None else float(m)

    @property
    def active_terms(self) -> tuple[str, ...]:
        return tuple(t for t in TERMS if self.multiplier(t) > 0)

    @property
    def content_lab(self) -> bool:
        """Whether the content term reads LAB L (``losses.content_space``, else the mode's default)."""
        space = self.losses.content_space or ("lab_l" if self.mode in ("pretrain", "unpaired") else "rgb")
        return space == "lab_l"

    @property
    def content_vs_reference(self) -> bool:
        """The content term compares with the demosaiced reference (pretrain, unpaired), else the ground truth."""
        return self.mode in ("pretrain", "unpaired")

    @property
    def pairing(self) -> str:
        return self.data.pairing or ("shuffled" if self.mode == "unpaired" else "paired")

    @property
    def evaluates_start(self) -> bool:
        """A run from ``model.init_from`` evaluates its start at step 0, as the first candidate for best.pt."""
        return bool(self.model.init_from)

    @property
    def num_evaluations(self) -> int:
        """Evaluations in a full run, the start's included (the search's ASHA ``max_t``)."""
        return -(-self.train.steps // self.train.eval_interval) + int(self.evaluates_start)


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None or "://" in path:
        return path
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


def _check(cfg: TrainConfig, src: Source) -> TrainConfig:
    terms = cfg.active_terms
    if not terms:
        raise ConfigError(f"{src.where('losses')}: losses: every multiplier is 0; nothing to train")
    if cfg.pairing != "paired":
        bad = [t for t in terms if t in PAIRED_ONLY]
        if bad or (cfg.mode.startswith("paired")):
            t = bad[0] if bad else "mode"
            key = f"losses.{t}" if bad else "data.pairing"
            raise ConfigError(f"{src.where(key)}: {key}: needs paired data, but data.pairing is {cfg.pairing!r}")
    if cfg.features.cache_real is True and (cfg.data.augment or cfg.data.patch_size is not None):
        why = "data.augment is true" if cfg.data.augment else f"data.patch_size is {cfg.data.patch_size} (random crops)"
        raise ConfigError(f"{src.where('features.cache_real')}: features.cache_real: needs the same real images every "
                          f"draw, but {why}; set features.cache_real: false or train on whole unaugmented images")
    return cfg


def train_config_from_dict(data: Mapping[str, Any] | None, base_dir: str | os.PathLike | None = None,
                           name: str = "<config>", src: Source | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a mapping; relative paths resolve against ``base_dir``."""
    src = src or Source(name)
    cfg = build(TrainConfig, dict(data or {}), src)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data_cfg = replace(cfg.data, root=_resolve(cfg.data.root, base), splits=_resolve(cfg.data.splits, base))
    model = replace(cfg.model, init_from=_resolve(cfg.model.init_from, base))
    return _check(replace(cfg, data=data_cfg, model=model), src)


def load_train_config(path: str | os.PathLike, overrides: list[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Read a training YAML; ``overrides`` are ``["a.b=value", ...]`` (``--set``) or ``{"a.b": value}``."""
    data, src = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections data, model, losses, optim, train")
    pairs = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in pairs:
        _check_key(key)
        set_dotted(data, key, value)
        src.lines.pop(key, None)
    where = Source(src.file, src.lines)
    return train_config_from_dict(data, Path(path).resolve().parent, str(path), where)


def _check_key(dotted: str) -> None:
    """An override key must name an existing field; the message lists the valid keys of that section."""

    cls: Any = TrainConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            section = ".".join(parts[:i]) or "top level"
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"override {dotted}: unknown key {part!r} in {section}{hint}; "
                              f"valid: {', '.join(fields)}")
        tp = typing.get_type_hints(cls)[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"override {dotted}: {'.'.join(parts[: i + 1])} is a value, not a section")
            cls = tp


def apply_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with dotted keys set (the search applies sampled values this way); validated again."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        _check_key(key)
        set_dotted(data, key, value)
    return train_config_from_dict(data, Path.cwd(), "<overrides>")
