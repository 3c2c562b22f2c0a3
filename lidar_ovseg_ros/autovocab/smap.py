"""SMAP, the point captioner's head of 3D-AVS: per-voxel OpenScene features -> 12 sector vectors.

Built to match `PerViewAttentionPool3d` (`models/attention_pool.py`) and the LiDAR-sector strategy
of `point_captioner/infer_features.py` in ozzyou/3D-AVS:

1. `in_proj`: a 1x1 sparse conv with bias, 768 -> 512 (a per-voxel affine map, done as a Linear).
2. Conditional position encoding: `x = x + LayerNorm(Linear(cpe(x)))`, `cpe` a 3x3x3 stride-1
   sparse conv with bias on the voxels themselves (a submanifold conv: MinkowskiEngine's stride-1
   conv keeps the input coordinates).
3. 12 azimuth sectors of 30 degrees: voxel v is in sector i when
   `-pi + i*pi/6 <= atan2(y_v, x_v) < -pi + (i+1)*pi/6`, with `(x_v, y_v)` the voxel's
   representative point (the first point of the voxel, as the voxelizer keeps it). The angle is
   computed in float32 and compared in float64, as the official numpy code does, so a point at
   exactly +pi lies in no sector.
4. Per sector: query = mean of its features; keys = values = its features, zero-padded to the
   largest sector of the scan; 8-head attention with separate q/k/v projections and `c_proj`.
   The official `key_padding_mask` is a float 0/1 tensor, which PyTorch ADDS to the attention
   logits: padded (all-zero) keys get +1, not -inf, and do receive attention. That is reproduced
   here on purpose (`padding="official"`), so the released weights give the released captions;
   `padding="masked"` is the textbook (-inf) variant, offered for comparison only.

Empty sectors are undefined in the official code (a mean of nothing); here they are flagged
(`valid=False`, a zero row) and get no caption. Rows are in the caller's voxel order (the
voxelizer's); the official head reads MinkowskiEngine's `decomposed_features`, whose row order is
not the voxelizer's, so its output is not reproducible run to run — this module computes what that
code means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lidar_ovseg_ros.models.minkunet import spconv_cpu_guard
from lidar_ovseg_ros.models.openscene_checkpoint import me_kernel_to_spconv

NUM_SECTORS = 12


@dataclass(frozen=True)
class SmapConfig:
    """Sizes of the official nuScenes SMAP (`ours_openseg_smap_pretrained.yaml`)."""

    input_dim: int = 768  # OpenScene (OpenSeg) feature size
    embed_dim: int = 512  # `attn_dim`
    output_dim: int = 512  # `smap_dim` (CLIP ViT-B/32 space, ClipCap's prefix)
    num_heads: int = 8
    num_sectors: int = NUM_SECTORS
    padding: str = "official"  # "official" (float mask, +1 on padded keys) or "masked"

    def __post_init__(self) -> None:
        for name in ("input_dim", "embed_dim", "output_dim", "num_heads", "num_sectors"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"SmapConfig.{name} must be positive")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"SmapConfig.embed_dim {self.embed_dim} is not divisible by num_heads "
                f"{self.num_heads}"
            )
        if self.padding not in ("official", "masked"):
            raise ValueError(
                f"SmapConfig.padding must be 'official' or 'masked', not {self.padding!r}"
            )


@dataclass
class SmapOutput:
    """Per-sector embeddings [S, output_dim], how many voxels each sector pooled, and which
    sectors had any (an empty sector has a zero row and `valid` False)."""

    embeddings: torch.Tensor
    counts: np.ndarray
    valid: np.ndarray


def sector_masks(points: np.ndarray | torch.Tensor, num_sectors: int = NUM_SECTORS) -> np.ndarray:
    """[N, S] bool: voxel n is in sector i when its representative point's azimuth
    `atan2(y, x)` lies in `[-pi + i*2pi/S, -pi + (i+1)*2pi/S)` (the official
    `generate_per_view_lidar_mask`: float32 angle, float64 bounds)."""
    xyz = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points)
    if xyz.ndim != 2 or xyz.shape[1] < 2:
        raise ValueError(f"points must be [N, >=2], got {xyz.shape}")
    xyz = xyz.astype(np.float32, copy=False)
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])  # float32, like the official float tensor input
    step = 2 * np.pi / num_sectors
    mask = np.zeros((len(xyz), num_sectors), dtype=bool)
    for i in range(num_sectors):
        angle = -np.pi + i * step
        mask[:, i] = (phi >= angle) & (phi < angle + step)
    return mask


def attention_pool(
    query: torch.Tensor,
    keys: torch.Tensor,
    pad: torch.Tensor,
    q_proj: nn.Linear,
    k_proj: nn.Linear,
    v_proj: nn.Linear,
    c_proj: nn.Linear,
    num_heads: int,
    padding: str = "official",
) -> torch.Tensor:
    """Multi-head attention of one query per sector over its zero-padded keys.

    query [S, E], keys [S, M, E] (values are the keys), pad [S, M] float 1 on padded slots.
    `padding="official"` adds `pad` to the logits, exactly as `F.multi_head_attention_forward`
    does with the official float `key_padding_mask`; `"masked"` sends padded logits to -inf.
    Returns [S, output_dim].
    """
    s, m, e = keys.shape
    d = e // num_heads
    q = q_proj(query).view(s, num_heads, d)
    k = k_proj(keys).view(s, m, num_heads, d)
    v = v_proj(keys).view(s, m, num_heads, d)
    logits = torch.einsum("shd,smhd->shm", q * (1.0 / math.sqrt(d)), k)
    if padding == "official":
        logits = logits + pad[:, None, :]
    else:
        logits = logits.masked_fill(pad[:, None, :] > 0, float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    out = torch.einsum("shm,smhd->shd", weights, v).reshape(s, e)
    return c_proj(out)


class SmapHead(nn.Module):
    """The SMAP head on top of the (OpenScene) trunk's per-voxel features.

    Parameter names follow the official `attn_layer.*` keys; `cpe` is an spconv `SubMConv3d`
    (weights `(out, 3, 3, 3, in)`, converted from the MinkowskiEngine `(27, in, out)` kernel by
    `smap_state_from_official`) and its bias is `cpe_bias`.
    """

    def __init__(self, config: SmapConfig | None = None) -> None:
        super().__init__()
        import spconv.pytorch as spconv

        self.config = config or SmapConfig()
        c = self.config
        self.in_proj = nn.Linear(c.input_dim, c.embed_dim) if c.input_dim != c.embed_dim else None
        # spconv's CPU path has no fused bias: the conv's bias is a separate parameter
        self.cpe = spconv.SubMConv3d(c.embed_dim, c.embed_dim, 3, bias=False, indice_key="smap_cpe")
        self.cpe_bias = nn.Parameter(torch.zeros(c.embed_dim))
        self.linear = nn.Linear(c.embed_dim, c.embed_dim)
        self.norm = nn.LayerNorm(c.embed_dim)
        self.k_proj = nn.Linear(c.embed_dim, c.embed_dim)
        self.q_proj = nn.Linear(c.embed_dim, c.embed_dim)
        self.v_proj = nn.Linear(c.embed_dim, c.embed_dim)
        self.c_proj = nn.Linear(c.embed_dim, c.output_dim)

    def encode_voxels(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """in_proj + conditional position encoding: [N, input_dim] -> [N, embed_dim]."""
        import spconv.pytorch as spconv

        x = self.in_proj(features) if self.in_proj is not None else features
        coords = coords.to(device=x.device, dtype=torch.int32)
        origin = coords.min(dim=0).values
        local = coords - origin
        shape = (local.max(dim=0).values + 1).tolist()
        indices = torch.cat([torch.zeros_like(local[:, :1]), local], dim=1).contiguous()
        sparse = spconv.SparseConvTensor(x.contiguous(), indices, shape, batch_size=1)
        with spconv_cpu_guard(x.device):
            res = self.cpe(sparse).features + self.cpe_bias
        return x + self.norm(self.linear(res))

    def forward(
        self,
        features: torch.Tensor,
        coords: torch.Tensor,
        points: np.ndarray | torch.Tensor,
        pooled: np.ndarray | torch.Tensor | None = None,
    ) -> SmapOutput:
        """features [N, input_dim] and coords [N, 3] (integer voxel coordinates) in voxelizer
        order; points [N, 3] the voxels' representative points (metres, sensor frame);
        pooled: optional [N] bool, the voxels that are pooled (the official code pools the key
        frame's voxels of a multi-sweep input; the convolution still sees all voxels)."""
        if features.ndim != 2 or features.shape[1] != self.config.input_dim:
            raise ValueError(
                f"features must be [N, {self.config.input_dim}], got {tuple(features.shape)}"
            )
        n = features.shape[0]
        if coords.shape != (n, 3):
            raise ValueError(f"coords must be [{n}, 3], got {tuple(coords.shape)}")
        if len(points) != n:
            raise ValueError(f"points must have {n} rows (one per voxel), got {len(points)}")
        masks = sector_masks(points, self.config.num_sectors)
        if pooled is not None:
            pooled_np = np.asarray(
                pooled.cpu() if isinstance(pooled, torch.Tensor) else pooled, dtype=bool
            )
            if pooled_np.shape != (n,):
                raise ValueError(f"pooled must be a [{n}] bool mask, got {pooled_np.shape}")
        if n == 0:
            return self._empty(features)
        x = self.encode_voxels(features, coords)
        if pooled is not None:
            x = x[torch.from_numpy(pooled_np).to(x.device)]
            masks = masks[pooled_np]
        return self.pool_sectors(x, masks)

    def _empty(self, like: torch.Tensor) -> SmapOutput:
        s = self.config.num_sectors
        return SmapOutput(
            embeddings=like.new_zeros((s, self.config.output_dim)),
            counts=np.zeros(s, dtype=np.int64),
            valid=np.zeros(s, dtype=bool),
        )

    def _pool_one(self, feats: torch.Tensor, max_n: int) -> torch.Tensor:
        """One sector's attention pooling, equal to `attention_pool` over its keys zero-padded
        to `max_n` without building the padding: a zero key projects to the k/v biases, so the
        `max_n - n` padded slots share one logit (q . b_k / sqrt(d) + 1, the official float
        mask) and one value (b_v), counted with their multiplicity in the softmax."""
        n, e = feats.shape
        h = self.config.num_heads
        d = e // h
        scale = 1.0 / math.sqrt(d)
        q = self.q_proj(feats.mean(dim=0)).view(h, d)
        k = self.k_proj(feats).view(n, h, d)
        v = self.v_proj(feats).view(n, h, d)
        logits = torch.einsum("hd,nhd->hn", q * scale, k)  # [H, n]
        pads = max_n - n
        if pads > 0 and self.config.padding == "official":
            b_k = self.k_proj.bias.view(h, d)
            b_v = self.v_proj.bias.view(h, d)
            pad_logit = (q * scale * b_k).sum(dim=1) + 1.0  # [H]
            top = torch.maximum(logits.max(dim=1).values, pad_logit)
            w = torch.exp(logits - top[:, None])  # [H, n]
            w_pad = pads * torch.exp(pad_logit - top)  # [H]
            num = torch.einsum("hn,nhd->hd", w, v) + w_pad[:, None] * b_v
            out = num / (w.sum(dim=1) + w_pad)[:, None]
        else:  # no padding, or the textbook mask: padded keys get no weight
            out = torch.einsum("hn,nhd->hd", torch.softmax(logits, dim=1), v)
        return self.c_proj(out.reshape(e))

    def pool_sectors(self, x: torch.Tensor, masks: np.ndarray) -> SmapOutput:
        """Attention pooling of encoded voxels x [N, E] into sectors (masks [N, S] bool); the
        padding of the official batched call is accounted for exactly but never built (memory
        O(N E) instead of O(S max_n E))."""
        s = masks.shape[1]
        counts = masks.sum(axis=0).astype(np.int64)
        valid = counts > 0
        out = x.new_zeros((s, self.config.output_dim))
        if not valid.any():
            return SmapOutput(embeddings=out, counts=counts, valid=valid)
        max_n = int(counts.max())
        for j in np.flatnonzero(valid):
            sel = x[torch.from_numpy(masks[:, j]).to(x.device)]
            out[int(j)] = self._pool_one(sel, max_n)
        return SmapOutput(embeddings=out, counts=counts, valid=valid)


# --------------------------------------------------------------------------- official checkpoint

SMAP_PREFIX = "attn_layer."
TRUNK_PREFIX = "net3d."


class SmapCheckpointError(ValueError):
    """The SMAP checkpoint does not have the official layout; the message names the keys."""


def smap_state_from_official(state: Mapping[str, torch.Tensor], config: SmapConfig) -> dict:
    """The official `attn_layer.*` tensors (prefix already removed) as this module's state dict,
    with every key and shape checked."""
    c = config
    e = c.embed_dim
    expected: dict[str, tuple[int, ...]] = {
        "cpe.kernel": (27, e, e),
        "cpe.bias": (1, e),
        "linear.weight": (e, e),
        "linear.bias": (e,),
        "norm.weight": (e,),
        "norm.bias": (e,),
        "c_proj.weight": (c.output_dim, e),
        "c_proj.bias": (c.output_dim,),
    }
    for p in ("q", "k", "v"):
        expected[f"{p}_proj.weight"] = (e, e)
        expected[f"{p}_proj.bias"] = (e,)
    if c.input_dim != c.embed_dim:
        expected["in_proj.kernel"] = (c.input_dim, e)
        expected["in_proj.bias"] = (1, e)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SmapCheckpointError(
            "SMAP head keys do not match the official layout: missing "
            f"{[SMAP_PREFIX + k for k in missing]}, "
            f"unexpected {[SMAP_PREFIX + k for k in unexpected]}"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise SmapCheckpointError(
                f"{SMAP_PREFIX}{key} has shape {tuple(state[key].shape)}, expected {shape}"
            )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        value = value.detach().float()
        if key == "cpe.kernel":
            out["cpe.weight"] = me_kernel_to_spconv(value, (e, 3, 3, 3, e))
        elif key == "cpe.bias":
            out["cpe_bias"] = value.reshape(-1)
        elif key == "in_proj.kernel":  # a 1x1 conv: (in, out) -> Linear (out, in)
            out["in_proj.weight"] = me_kernel_to_spconv(value, (e, c.input_dim))
        elif key == "in_proj.bias":
            out["in_proj.bias"] = value.reshape(-1)
        else:
            out[key] = value
    return out


@dataclass
class SmapCheckpoint:
    """The parts of `smap_model_epoch_20.pth.tar`: the head's state (this module's names), the
    trunk's state (official `net3d.` names, prefix removed) and the epoch."""

    head: dict[str, torch.Tensor]
    trunk: dict[str, torch.Tensor]
    epoch: int | None


def split_smap_state_dict(state: Mapping[str, Any], config: SmapConfig) -> SmapCheckpoint:
    """Split an official DisNet(method='smap') state dict (optionally `module.`-prefixed) into the
    trunk (`net3d.*`) and the SMAP head (`attn_layer.*`); anything else is an error."""
    state = {
        k.replace("module.", "", 1) if k.startswith("module.") else k: v for k, v in state.items()
    }
    head = {k[len(SMAP_PREFIX) :]: v for k, v in state.items() if k.startswith(SMAP_PREFIX)}
    trunk = {k[len(TRUNK_PREFIX) :]: v for k, v in state.items() if k.startswith(TRUNK_PREFIX)}
    other = sorted(k for k in state if not k.startswith((SMAP_PREFIX, TRUNK_PREFIX)))
    if other:
        raise SmapCheckpointError(f"unexpected keys outside net3d./attn_layer.: {other[:10]}")
    if not trunk:
        raise SmapCheckpointError("no net3d.* (trunk) keys in the SMAP checkpoint")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SmapCheckpointError("every state_dict entry must be a tensor")
    return SmapCheckpoint(head=smap_state_from_official(head, config), trunk=trunk, epoch=None)


def load_smap_checkpoint(path: str | Path, config: SmapConfig | None = None) -> SmapCheckpoint:
    """Read `smap_model_epoch_20.pth.tar` (a dict with `state_dict`, `epoch`, `optimizer`, ...)
    with `weights_only=True`; keys and shapes are checked."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SMAP checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SmapCheckpointError(f"{path}: not a readable torch checkpoint: {exc}") from exc
    if isinstance(data, Mapping) and "state_dict" in data:
        state = data["state_dict"]
        epoch = data.get("epoch")
    elif isinstance(data, Mapping):
        state, epoch = data, None
    else:
        raise SmapCheckpointError(f"{path}: expected a dict with 'state_dict', got {type(data)}")
    ckpt = split_smap_state_dict(state, config or SmapConfig())
    ckpt.epoch = int(epoch) if isinstance(epoch, (int, float)) else None
    return ckpt


def build_smap_head(
    checkpoint: SmapCheckpoint | None = None, config: SmapConfig | None = None, seed: int = 0
) -> SmapHead:
    """A SMAP head with the checkpoint's weights, or seed-deterministic random ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = SmapHead(config)
    if checkpoint is not None:
        result = head.load_state_dict(checkpoint.head, strict=True)
        del result
    return head.eval()


@dataclass
class TrunkComparison:
    """How the SMAP checkpoint's `net3d` compares with OpenScene's."""

    identical: bool
    max_abs_diff: float
    differing: list[str]
    only_in_smap: list[str]
    only_in_openscene: list[str]

    def summary(self) -> str:
        if self.identical:
            return "SMAP trunk == OpenScene trunk (one trunk can be shared)"
        return (
            f"SMAP trunk differs from OpenScene's: {len(self.differing)} tensors differ "
            f"(max |diff| {self.max_abs_diff:.3g}), {len(self.only_in_smap)} only in SMAP, "
            f"{len(self.only_in_openscene)} only in OpenScene"
        )


def compare_trunks(
    smap_trunk: Mapping[str, torch.Tensor], openscene_trunk: Mapping[str, torch.Tensor]
) -> TrunkComparison:
    """Tensor-by-tensor comparison of two `net3d` state dicts (prefixes removed)."""

    def strip(d: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in d.items():
            k = k.removeprefix("module.").removeprefix(TRUNK_PREFIX)
            out[k] = v
        return out

    a, b = strip(smap_trunk), strip(openscene_trunk)
    differing = []
    worst = 0.0
    for key in sorted(set(a) & set(b)):
        x, y = a[key], b[key]
        if x.shape != y.shape:
            differing.append(key)
            worst = math.inf
            continue
        if x.is_floating_point() or y.is_floating_point():
            diff = float((x.double() - y.double()).abs().max()) if x.numel() else 0.0
        else:
            diff = 0.0 if torch.equal(x, y) else math.inf
        if diff > 0:
            differing.append(key)
            worst = max(worst, diff)
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    return TrunkComparison(
        identical=not differing and not only_a and not only_b,
        max_abs_diff=worst,
        differing=differing,
        only_in_smap=only_a,
        only_in_openscene=only_b,
    )
