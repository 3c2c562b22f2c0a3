"""The table of released models this package can use: where each comes from, for what, licence.

Every URL is copied from the official repository named in `source` (README or script, with the
path). Nothing here is downloaded at import time. `kind`:

- "file": one file, downloaded as is;
- "archive": a .tar / .tar.gz / .zip, unpacked safely; `target` finds the file (or folder) the
  package needs inside it;
- "hf": a Hugging Face repository, fetched with `huggingface_hub.snapshot_download` into the
  Hugging Face cache (only `allow_patterns`: safetensors weights and configs);
- "manual": released on a file-sharing page a script cannot fetch (Google Drive): download it in
  a browser, then `lidar-ovseg weights fetch NAME --file PATH` installs and records it.

`sha256` is the digest of the downloaded file when it is known in advance (a mismatch is refused);
otherwise the digest is recorded at the first fetch and `verify` checks against that. The
prototype images carry the git tree ids of their folders at the pinned commit instead, which no
re-compression of GitHub's archive can change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

KINDS = ("file", "archive", "hf", "manual")

METHODS = ("igloss", "pop3d", "openscene", "3d-avs", "scalr", "waffleiron", "vlscene")
"""Methods `fetch --all-for` knows; an entry lists those it serves."""

IGLOSS_COMMIT = "c27c0edc8f71857785f15c8d9ee34cdacb0717f6"
"""valeoai/IGLOSS commit the prototype images are pinned to (2026-04-28; the images are unchanged
since the first commit 1c98f6333932240bc0bdf16e2713461237f80c5b)."""

IGLOSS_TEMPLATES = "open_voc_segmentation/templates/images"
"""Folder of the official prototype images inside the IGLOSS repository."""

_LICENSE_APACHE = "Apache-2.0"
_HF_TEXT_FILES = ("config.json", "preprocessor_config.json")
_CLIP_FILES = (
    *_HF_TEXT_FILES,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "model.safetensors",
)


@dataclass(frozen=True)
class ModelEntry:
    """One known model. See the module docstring for `kind`."""

    name: str
    purpose: str
    methods: tuple[str, ...]
    kind: str
    source: str
    """Where the URL comes from: official repository + file (README or script)."""
    licence: str
    url: str | None = None
    filename: str | None = None
    """Name of the downloaded file (file, archive, manual)."""
    sha256: str | None = None
    size: str | None = None
    """Download size when known ("~" when approximate)."""
    target: str | None = None
    """Glob, relative to the installed folder, matching exactly the one path the package uses
    (the checkpoint file, or the images folder). None: the single downloaded file."""
    members: tuple[str, ...] = ()
    """Archive: keep only these folders (paths below the archive's top-level folder)."""
    strip_top: bool = False
    """Archive: drop the single top-level folder (GitHub archives wrap the repository in one)."""
    tree_sha1: Mapping[str, str] = field(default_factory=dict)
    """Git tree ids of installed folders (relative paths), checked after unpacking."""
    hf_repo: str | None = None
    allow_patterns: tuple[str, ...] = ()
    hf_required: tuple[str, ...] = ()
    """Files that must be in the Hugging Face snapshot for it to count as cached."""
    manual: str | None = None
    """For entries a script cannot download: the page a person opens."""
    required: bool = True
    """Fetched by `fetch --all-for METHOD` (False: only with --optional; e.g. text-to-image)."""
    notice: str | None = None
    """Shown when fetched and when first used (licence restrictions)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model '{self.name}': kind must be one of {KINDS}")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"model '{self.name}': unknown methods {sorted(unknown)}")
        if self.kind == "hf" and not (self.hf_repo and self.allow_patterns and self.hf_required):
            raise ValueError(f"model '{self.name}': hf entries need hf_repo, allow_patterns")
        if self.kind in ("file", "archive") and not (self.url and self.filename):
            raise ValueError(f"model '{self.name}': {self.kind} entries need url and filename")
        if self.kind == "manual" and not (self.manual and self.filename):
            raise ValueError(f"model '{self.name}': manual entries need the page and filename")
        object.__setattr__(self, "tree_sha1", MappingProxyType(dict(self.tree_sha1)))

    @property
    def fetch_command(self) -> str:
        return f"lidar-ovseg weights fetch {self.name}"

    @property
    def is_archive(self) -> bool:
        """Unpacked after download. By kind, never by name: `nuscenes_openseg.pth.tar` and
        `smap_model_epoch_20.pth.tar` are torch files despite their suffix."""
        return self.kind == "archive"


_ENTRIES = (
    # --- IGLOSS -----------------------------------------------------------------------------
    ModelEntry(
        name="igloss-scalr-plus",
        purpose="IGLOSS 3D backbone: ScaLR+ WI-48-768 distilled from DINOv2 ViT-L (ckpt_last.pth)",
        methods=("igloss",),
        kind="archive",
        source=f"valeoai/IGLOSS README.md @ {IGLOSS_COMMIT[:7]} (section 'Zero-shot Semantic "
        "Segmentation of Lidar Scenes with IGLOSS')",
        licence="Apache-2.0 (IGLOSS source headers; the repository has no root LICENSE file)",
        url="https://github.com/valeoai/IGLOSS/releases/download/v0.1.0/"
        "WI_768_droppath_gelu-dinov2_vitl-448x896-mlp_2048-65_epoch-checkpointing.tar",
        filename="WI_768_droppath_gelu-dinov2_vitl-448x896-mlp_2048-65_epoch-checkpointing.tar",
        target="**/ckpt_last.pth",
    ),
    ModelEntry(
        name="igloss-prototype-images",
        purpose="the paper's prototype images: nuScenes 16 classes / 95 images, SemanticKITTI 19 "
        "classes / 70 images (exemplars of the nuscenes and semantickitti presets)",
        methods=("igloss",),
        kind="archive",
        source=f"valeoai/IGLOSS {IGLOSS_TEMPLATES}/{{nuscenes,semantic_kitti}}_gpt_templates "
        f"@ {IGLOSS_COMMIT[:7]} (GitHub archive of that commit)",
        licence="Apache-2.0 (IGLOSS source headers; the repository has no root LICENSE file)",
        url=f"https://codeload.github.com/valeoai/IGLOSS/tar.gz/{IGLOSS_COMMIT}",
        filename=f"IGLOSS-{IGLOSS_COMMIT}.tar.gz",
        size="~205 MB (the whole repository at that commit; the images are almost all of it)",
        target=IGLOSS_TEMPLATES,
        members=(
            f"{IGLOSS_TEMPLATES}/nuscenes_gpt_templates",
            f"{IGLOSS_TEMPLATES}/semantic_kitti_gpt_templates",
        ),
        strip_top=True,
        tree_sha1={
            f"{IGLOSS_TEMPLATES}/nuscenes_gpt_templates": (
                "dcb2ed845612eb45848bd69b3e9223834fc1ca4d"
            ),
            f"{IGLOSS_TEMPLATES}/semantic_kitti_gpt_templates": (
                "ccc003b48794c134e733ca1e6f65fb39b0444e16"
            ),
        },
    ),
    ModelEntry(
        name="dinov2-large",
        purpose="IGLOSS prototype features: DINOv2 ViT-L/14 (Hugging Face port of the timm model)",
        methods=("igloss",),
        kind="hf",
        source="valeoai/IGLOSS open_voc_segmentation/extract_image_features.py (DINOv2 ViT-L/14); "
        "Hugging Face facebook/dinov2-large",
        licence=_LICENSE_APACHE,
        hf_repo="facebook/dinov2-large",
        allow_patterns=(*_HF_TEXT_FILES, "model.safetensors"),
        hf_required=("config.json", "model.safetensors"),
        size="~1.2 GB",
    ),
    ModelEntry(
        name="sd-turbo",
        purpose="text-to-image prototypes for classes beyond the paper's images (opt-in)",
        methods=("igloss",),
        kind="hf",
        source="Hugging Face stabilityai/sd-turbo (IGLOSS generates prototype images; its "
        "generator and prompts are not published)",
        licence="Stability AI Non-Commercial Research Community License (sai-nc-community)",
        hf_repo="stabilityai/sd-turbo",
        allow_patterns=(
            "model_index.json",
            "*/config.json",
            "scheduler/scheduler_config.json",
            "tokenizer/*.json",
            "tokenizer/merges.txt",
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ),
        hf_required=(
            "model_index.json",
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ),
        size="~5.2 GB",
        required=False,
        notice="sd-turbo is licensed for NON-COMMERCIAL research use only (Stability AI "
        "Non-Commercial Research Community License, https://huggingface.co/stabilityai/sd-turbo"
        "/blob/main/LICENSE.md). The nuscenes and semantickitti presets need no generator once "
        "`lidar-ovseg weights fetch igloss-prototype-images` has run.",
    ),
    # --- ScaLR+ / WaffleIron ---------------------------------------------------------------
    ModelEntry(
        name="scalr-plus-pretrained",
        purpose="ScaLR+ v0.2.0 pretrained WI-48-768 backbone + distillation head",
        methods=("scalr",),
        kind="archive",
        source="valeoai/ScaLR branch scalr_plus README.md ('Pretrained model with no annotation')",
        licence=_LICENSE_APACHE,
        url="https://github.com/valeoai/ScaLR/releases/download/v0.2.0/"
        "WI_768-ScaLR_plus-pretrained.tar.gz",
        filename="WI_768-ScaLR_plus-pretrained.tar.gz",
        target="**/ckpt_last.pth",
    ),
    ModelEntry(
        name="waffleiron-nuscenes",
        purpose="WaffleIron WI-48-384 trained on nuScenes (77.6 mIoU)",
        methods=("waffleiron",),
        kind="archive",
        source="valeoai/WaffleIron README.md ('Download the trained models')",
        licence=_LICENSE_APACHE,
        url="https://github.com/valeoai/WaffleIron/releases/download/v0.2.0/"
        "waffleiron_nuscenes.tar.gz",
        filename="waffleiron_nuscenes.tar.gz",
        target="**/ckpt_last.pth",
    ),
    ModelEntry(
        name="waffleiron-kitti",
        purpose="WaffleIron WI-48-256 trained on SemanticKITTI (68.0 mIoU)",
        methods=("waffleiron",),
        kind="archive",
        source="valeoai/WaffleIron README.md ('Download the trained models')",
        licence=_LICENSE_APACHE,
        url="https://github.com/valeoai/WaffleIron/releases/download/v0.2.0/waffleiron_kitti.tar.gz",
        filename="waffleiron_kitti.tar.gz",
        target="**/ckpt_last.pth",
    ),
    # --- POP-3D ----------------------------------------------------------------------------
    ModelEntry(
        name="pop3d",
        purpose="POP-3D network weights (pop3d_weights.pth, the paper's results)",
        methods=("pop3d",),
        kind="file",
        source="vobecant/POP3D README.md ('Pre-trained weights')",
        licence=_LICENSE_APACHE,
        url="https://data.ciirc.cvut.cz/public/projects/2023POP3D/pop3d_weights.pth",
        filename="pop3d_weights.pth",
    ),
    ModelEntry(
        name="pop3d-zeroshot",
        purpose="POP-3D precomputed CLIP text embeddings of the nuScenes classes "
        "(zeroshot_weights.pth, --text-embeddings-path of the official evaluation)",
        methods=("pop3d",),
        kind="file",
        source="vobecant/POP3D README.md ('Pre-trained weights')",
        licence=_LICENSE_APACHE,
        url="https://data.ciirc.cvut.cz/public/projects/2023POP3D/zeroshot_weights.pth",
        filename="zeroshot_weights.pth",
        required=False,
    ),
    ModelEntry(
        name="clip-vit-base-patch16",
        purpose="POP-3D text queries: CLIP ViT-B/16 text encoder (MaskCLIP+ space)",
        methods=("pop3d",),
        kind="hf",
        source="vobecant/POP3D MaskCLIP/README.md (convert_clip_weights.py --model ViT16); "
        "Hugging Face openai/clip-vit-base-patch16",
        licence="MIT",
        hf_repo="openai/clip-vit-base-patch16",
        allow_patterns=_CLIP_FILES,
        hf_required=("config.json", "model.safetensors"),
        size="~600 MB",
    ),
    # --- OpenScene / 3D-AVS ----------------------------------------------------------------
    ModelEntry(
        name="openscene-nuscenes-openseg",
        purpose="OpenScene 3D-distilled MinkUNet18A on nuScenes, OpenSeg space (768-d)",
        methods=("openscene", "3d-avs"),
        kind="file",
        source="pengsongyou/openscene config/nuscenes/ours_openseg_pretrained.yaml "
        "(TEST.model_path)",
        licence="Apache-2.0 (pengsongyou/openscene LICENSE); trained on nuScenes (CC BY-NC-SA "
        "4.0 data terms)",
        url="https://cvg-data.inf.ethz.ch/openscene/models/nuscenes_openseg.pth.tar",
        filename="nuscenes_openseg.pth.tar",
    ),
    ModelEntry(
        name="clip-vit-large-patch14-336",
        purpose="OpenScene / 3D-AVS text queries: CLIP ViT-L/14@336px text encoder",
        methods=("openscene", "3d-avs"),
        kind="hf",
        source="pengsongyou/openscene util/util.py extract_text_feature (CLIP ViT-L/14@336px for "
        "OpenSeg features); "
        "Hugging Face openai/clip-vit-large-patch14-336",
        licence="MIT",
        hf_repo="openai/clip-vit-large-patch14-336",
        allow_patterns=_CLIP_FILES,
        hf_required=("config.json", "model.safetensors"),
        size="~1.7 GB",
    ),
    ModelEntry(
        name="3d-avs-smap",
        purpose="3D-AVS point captioner SMAP (smap_model_epoch_20.pth.tar)",
        methods=("3d-avs",),
        kind="manual",
        source="ozzyou/3D-AVS README.md ('Point Captioner (SMAP)': pre-trained weights link)",
        licence=_LICENSE_APACHE,
        filename="smap_model_epoch_20.pth.tar",
        manual="https://drive.google.com/file/d/1aBuSIzMheip9dPZTiUVkY8ww8253UJhr/view",
    ),
    ModelEntry(
        name="clipcap-coco",
        purpose="3D-AVS caption decoder: ClipCap COCO weights (coco_weights.pt)",
        methods=("3d-avs",),
        kind="manual",
        source="ozzyou/3D-AVS point_captioner/decode_features.py (link from "
        "rmokady/CLIP_prefix_caption README)",
        licence="MIT (rmokady/CLIP_prefix_caption)",
        filename="coco_weights.pt",
        manual="https://drive.google.com/file/d/1IdaBtMSvtyzF0ByVaBHtvM0JYSXRExRX/view",
    ),
    ModelEntry(
        name="vlscene",
        purpose="VLScene stereo semantic scene completion, SemanticKITTI (mmcv checkpoint; "
        "17.83 val / 17.52 test mIoU); Baidu pan page, extraction code k9vy",
        methods=("vlscene",),
        kind="manual",
        source="willemeng/VLScene README.md ('Pretrained Model': VLScene link, extraction "
        "code k9vy)",
        licence="GPL-3.0 (willemeng/VLScene LICENSE)",
        filename="vlscene.pth",
        manual="https://pan.baidu.com/s/1Axv1TzH8Xi415a86Up5V9w",
        notice="VLScene is GPL-3.0: a system that ships it with this package must meet the "
        "GPL-3.0's terms.",
    ),
)

CATALOG: Mapping[str, ModelEntry] = MappingProxyType({e.name: e for e in _ENTRIES})

HF_IDS: Mapping[str, str] = MappingProxyType(
    {e.hf_repo: e.name for e in _ENTRIES if e.hf_repo is not None}
)
"""Hugging Face id -> catalog name."""

DEFAULTS: Mapping[str, str] = MappingProxyType(
    {
        "lidar_checkpoint": "igloss-scalr-plus",
        "pop3d_weights": "pop3d",
        "openscene_checkpoint": "openscene-nuscenes-openseg",
        "prototype_images": "igloss-prototype-images",
    }
)
"""The catalog name each `profile full` setting falls back to when no path is given."""


class UnknownModelError(KeyError, ValueError):
    """A name that is not in the catalog; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def get_entry(name: str) -> ModelEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model '{name}'; known: {', '.join(sorted(CATALOG))}"
        ) from None


def entries_for(method: str) -> list[ModelEntry]:
    """Every entry a method uses, in table order."""
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    return [e for e in _ENTRIES if method in e.methods]
