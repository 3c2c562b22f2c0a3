"""WaffleIron point backbone (ScaLR / ScaLR+ / original WaffleIron), state-dict compatible.

Module and parameter names follow valeoai/WaffleIron and valeoai/ScaLR (branch `scalr_plus`) so
official checkpoints load with `strict=True`: `embed.*`, `waffleiron.channel_mix.{i}.*`,
`waffleiron.spatial_mix.{i}.*`, `classif.*`. The maths is the official one (same op order), with
two deliberate additions that do not change single-scan fp32 results:

- batches with padding are exact: padded points scatter into a spare cell that is dropped, so they
  never pollute cell 0 (the official collate sends them there);
- under autocast the 3D->2D scatter-mean runs in fp32 and the residual stream stays fp32.

Memory: in inference (no autograd) the per-point work -- the embedding, whose neighbour branch is
a [B, C, N, K] tensor (K = 16 times the token size), the channel mixes and the head -- runs over
chunks of points sized by `CHUNK_ELEMENTS`, and `WaffleIron.forward` adds the residuals in place.
Every op involved works point by point, so chunks do not change what is computed; the peak drops
from ~150 KB to a few KB per point at ScaLR+ width. With autograd on (training) the plain
official formulation runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelLayerNorm",
    "ChannelMix",
    "DropPath",
    "Embedding",
    "SpatialMix",
    "WaffleIron",
    "WaffleIronBackbone",
    "WaffleIronConfig",
    "WaffleIronConfigError",
    "point_chunks",
    "scatter_mean",
]

CHUNK_ELEMENTS = 1 << 22
"""Elements of the largest per-chunk temporary in inference (16 MB in fp32)."""

_NORMS = ("layernorm", "batchnorm")
_ACTIVATIONS = ("gelu", "relu")
_HEADS = ("mlp", "linear")


class WaffleIronConfigError(ValueError):
    """A `WaffleIronConfig` entry is out of range or inconsistent."""


@dataclass(frozen=True)
class WaffleIronConfig:
    """Architecture of a WaffleIron segmenter; presets mirror the official configs.

    `grids_shape[i]` is the (H, W) grid of projection plane i, in the order of `dim_proj` (the
    axis each plane projects along: 2 -> (x, y), 1 -> (x, z), 0 -> (y, z)); layer d uses plane
    `d % len(grids_shape)`.
    """

    input_channels: int = 5
    nb_channels: int = 768
    depth: int = 48
    grids_shape: tuple[tuple[int, int], ...] = ((256, 256), (256, 32), (256, 32))
    dim_proj: tuple[int, ...] = (2, 1, 0)
    num_neighbors: int = 16
    norm: str = "layernorm"
    activation: str = "gelu"
    head: str = "mlp"
    hidden_channels: int = 2048
    out_channels: int = 1024
    drop_path: float = 0.0
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        # Accept lists (e.g. from YAML) but store hashable tuples.
        object.__setattr__(
            self, "grids_shape", tuple(tuple(int(v) for v in g) for g in self.grids_shape)
        )
        object.__setattr__(self, "dim_proj", tuple(int(d) for d in self.dim_proj))
        for key in ("input_channels", "nb_channels", "depth", "num_neighbors", "out_channels"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise WaffleIronConfigError(
                    f"WaffleIronConfig.{key} must be an int >= 1, got {value!r}"
                )
        if self.head == "mlp" and self.hidden_channels < 1:
            raise WaffleIronConfigError(
                f"WaffleIronConfig.hidden_channels must be >= 1 for the mlp head, "
                f"got {self.hidden_channels!r}"
            )
        if not self.grids_shape:
            raise WaffleIronConfigError("WaffleIronConfig.grids_shape must name at least one plane")
        for g in self.grids_shape:
            if len(g) != 2 or min(g) < 1:
                raise WaffleIronConfigError(
                    f"WaffleIronConfig.grids_shape entries must be (H, W) with H, W >= 1, got {g!r}"
                )
        if len(self.dim_proj) != len(self.grids_shape):
            raise WaffleIronConfigError(
                f"WaffleIronConfig.dim_proj {self.dim_proj} and grids_shape {self.grids_shape} "
                "must have the same length (one grid per projection plane)"
            )
        if any(d not in (0, 1, 2) for d in self.dim_proj):
            raise WaffleIronConfigError(
                f"WaffleIronConfig.dim_proj entries must be 0, 1 or 2, got {self.dim_proj}"
            )
        for key, allowed in (("norm", _NORMS), ("activation", _ACTIVATIONS), ("head", _HEADS)):
            if getattr(self, key) not in allowed:
                raise WaffleIronConfigError(
                    f"WaffleIronConfig.{key} must be one of {allowed}, got {getattr(self, key)!r}"
                )
        if not 0.0 <= self.drop_path < 1.0:
            raise WaffleIronConfigError(
                f"WaffleIronConfig.drop_path must be in [0, 1), got {self.drop_path!r}"
            )

    @property
    def n_planes(self) -> int:
        return len(self.grids_shape)

    def replace(self, **changes) -> WaffleIronConfig:
        return dataclasses.replace(self, **changes)

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def scalr_plus(cls, **overrides) -> WaffleIronConfig:
        """ScaLR+ (valeoai/ScaLR `scalr_plus`): WI-768, 48 layers, LayerNorm, GELU, MLP -> 1024."""
        return cls(**{"name": "scalr_plus", **overrides})

    @classmethod
    def scalr_v1(cls, **overrides) -> WaffleIronConfig:
        """ScaLR v1: WI-768, 48 layers, LayerNorm, ReLU, linear head 768 -> 1024."""
        base = {"name": "scalr_v1", "activation": "relu", "head": "linear"}
        return cls(**{**base, **overrides})

    @classmethod
    def waffleiron_nuscenes(cls, **overrides) -> WaffleIronConfig:
        """Original WaffleIron-48-384 for nuScenes (16 classes), grids 166/16, BatchNorm, ReLU."""
        base = {
            "name": "waffleiron_nuscenes",
            "nb_channels": 384,
            "grids_shape": ((166, 166), (166, 16), (166, 16)),
            "norm": "batchnorm",
            "activation": "relu",
            "head": "linear",
            "out_channels": 16,
        }
        return cls(**{**base, **overrides})

    @classmethod
    def waffleiron_semantickitti(cls, **overrides) -> WaffleIronConfig:
        """Original WaffleIron-48-256 for SemanticKITTI (19 classes), grids 250/12."""
        base = {
            "name": "waffleiron_semantickitti",
            "nb_channels": 256,
            "grids_shape": ((250, 250), (250, 12), (250, 12)),
            "norm": "batchnorm",
            "activation": "relu",
            "head": "linear",
            "out_channels": 19,
        }
        return cls(**{**base, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> WaffleIronConfig:
        """ScaLR+ structure at toy size for tests: 3 layers (one per plane), 32 channels."""
        base = {
            "name": "tiny",
            "nb_channels": 32,
            "depth": 3,
            "hidden_channels": 64,
            "out_channels": 32,
        }
        return cls(**{**base, **overrides})


def _inference(module: nn.Module) -> bool:
    """Eval mode without autograd: the only case where chunks and in-place sums are used."""
    return not module.training and not torch.is_grad_enabled()


def point_chunks(n: int, elements_per_point: int, module: nn.Module) -> list[slice] | None:
    """Slices of at most `CHUNK_ELEMENTS // elements_per_point` points covering range(n), or None
    when chunking does not apply (training mode, autograd on, or everything fits in one chunk:
    batch-norm statistics in training and autograd need the whole tensor)."""
    step = max(1, CHUNK_ELEMENTS // max(1, elements_per_point))
    if not _inference(module) or step >= n:
        return None
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def _chunked(fn, x: torch.Tensor, chunks: list[slice]) -> torch.Tensor:
    """`fn(x[..., part])` for every part, written into one [B, C_out, N] output."""
    out = None
    for part in chunks:
        y = fn(part)
        if out is None:
            out = y.new_empty((*y.shape[:-1], x.shape[-1]))
        out[..., part] = y
    return out


def scatter_mean(feat: torch.Tensor, index: torch.Tensor, num_cells: int) -> torch.Tensor:
    """Mean of `feat` [B, C, N] over points sharing a cell `index` [B, C, N] -> [B, C, num_cells].

    Empty cells stay 0 (official `scatter_reduce(..., "mean", include_self=False)`). Half
    precision inputs are reduced in fp32 so crowded cells cannot overflow, then cast back.
    """
    acc_dtype = torch.promote_types(feat.dtype, torch.float32)
    out = torch.zeros(
        (feat.shape[0], feat.shape[1], num_cells), device=feat.device, dtype=acc_dtype
    )
    out.scatter_reduce_(2, index, feat.to(acc_dtype), "mean", include_self=False)
    return out.to(feat.dtype)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dim of [B, C, N] tokens (official `myLayerNorm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, -1)).transpose(1, -1)


def _norm(kind: str, channels: int) -> nn.Module:
    return ChannelLayerNorm(channels) if kind == "layernorm" else nn.BatchNorm1d(channels)


def _act(kind: str) -> nn.Module:
    return nn.GELU() if kind == "gelu" else nn.ReLU(inplace=True)


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (training only), per sample."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def extra_repr(self) -> str:
        return f"prob={self.drop_prob}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep) * mask


class Embedding(nn.Module):
    """Point embedding: per-point 1x1 conv + max over a 1x1-conv of (neighbour - centre)."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels_in)
        self.conv1 = nn.Conv1d(channels_in, channels_out, 1)
        self.conv2 = nn.Sequential(
            nn.BatchNorm2d(channels_in),
            nn.Conv2d(channels_in, channels_out, 1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 1, bias=False),
        )
        self.final = nn.Conv1d(2 * channels_out, channels_out, 1)

    def forward(self, x: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, N], neighbors [B, N, K] (the point itself excluded) -> [B, C_out, N]."""
        x = self.norm(x)
        b, _, n = x.shape
        chunks = point_chunks(n, b * self.conv1.out_channels * neighbors.shape[-1], self)
        if chunks is None:
            return self._embed(x, neighbors, slice(None))
        return _chunked(lambda part: self._embed(x, neighbors[:, part], part), x, chunks)

    def _embed(self, x: torch.Tensor, neighbors: torch.Tensor, part: slice) -> torch.Tensor:
        """Embedding of the points `part` of x [B, C_in, N]; `neighbors` [B, n, K] are theirs."""
        centre = x[..., part]
        point_emb = self.conv1(centre)
        b, c, n = centre.shape
        k = neighbors.shape[-1]
        # One gather for all K neighbours; same values/layout as the official per-neighbour loop.
        idx = neighbors.reshape(b, 1, n * k).expand(-1, c, -1)
        neigh = torch.gather(x, 2, idx).view(b, c, n, k) - centre.unsqueeze(-1)
        neigh_emb = self.conv2(neigh).max(-1)[0]
        return self.final(torch.cat((point_emb, neigh_emb), dim=1))


class ChannelMix(nn.Module):
    """tokens + LayerScale(MLP(Norm(tokens)))."""

    def __init__(self, channels: int, drop_path: float, norm: str, activation: str) -> None:
        super().__init__()
        self.norm = _norm(norm, channels)
        self.mlp = nn.Sequential(
            nn.Conv1d(channels, channels, 1),
            _act(activation),
            nn.Conv1d(channels, channels, 1),
        )
        self.scale = nn.Conv1d(channels, channels, 1, bias=False, groups=channels)
        self.drop_path = DropPath(drop_path)

    def forward(self, tokens: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """`inplace` (inference only): the same sum written into `tokens`, chunk by chunk."""
        if not (inplace and _inference(self)):
            return tokens + self.drop_path(self.scale(self.mlp(self.norm(tokens))))
        b, c, n = tokens.shape
        for part in point_chunks(n, 4 * b * c, self) or [slice(None)]:
            chunk = tokens[..., part]
            chunk += self.scale(self.mlp(self.norm(chunk)))
        return tokens


class SpatialMix(nn.Module):
    """tokens + LayerScale(Inflate(depthwise-conv FFN(Flatten(Norm(tokens))))) on one 2D grid."""

    def __init__(
        self,
        channels: int,
        grid_shape: tuple[int, int],
        drop_path: float,
        norm: str,
        activation: str,
    ) -> None:
        super().__init__()
        self.H, self.W = grid_shape
        self.norm = _norm(norm, channels)
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            _act(activation),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        )
        self.scale = nn.Conv1d(channels, channels, 1, bias=False, groups=channels)
        self.drop_path = DropPath(drop_path)

    def extra_repr(self) -> str:
        return f"(grid): [{self.H}, {self.W}]"

    def forward(
        self, tokens: torch.Tensor, index: torch.Tensor, padded: bool, inplace: bool = False
    ) -> torch.Tensor:
        """`index` [B, C, N]: cell of each point; padded points (if `padded`) point at H*W.
        `inplace` (inference only): the residual is added into `tokens`."""
        b, c, _ = tokens.shape
        cells = self.H * self.W
        residual = scatter_mean(self.norm(tokens), index, cells + 1 if padded else cells)
        if padded:
            residual = residual[..., :cells]
        residual = self.ffn(residual.reshape(b, c, self.H, self.W))
        residual = self.scale(residual.reshape(b, c, cells))
        if padded:  # padded points read a zero cell: their residual is 0
            residual = F.pad(residual, (0, 1))
        residual = torch.gather(residual, 2, index)
        if inplace and _inference(self):
            return tokens.add_(residual)
        return tokens + self.drop_path(residual)


class WaffleIronBackbone(nn.Module):
    """Alternating SpatialMix / ChannelMix layers; layer d uses projection plane d % n_planes."""

    def __init__(self, config: WaffleIronConfig) -> None:
        super().__init__()
        c = config
        self.grids_shape = c.grids_shape
        self.channel_mix = nn.ModuleList(
            [ChannelMix(c.nb_channels, c.drop_path, c.norm, c.activation) for _ in range(c.depth)]
        )
        self.spatial_mix = nn.ModuleList(
            [
                SpatialMix(
                    c.nb_channels,
                    c.grids_shape[d % c.n_planes],
                    c.drop_path,
                    c.norm,
                    c.activation,
                )
                for d in range(c.depth)
            ]
        )

    def forward(
        self,
        tokens: torch.Tensor,
        cell_ind: torch.Tensor,
        point_mask: torch.Tensor | None = None,
        inplace: bool = False,
    ) -> torch.Tensor:
        """tokens [B, C, N], cell_ind [B, n_planes, N], point_mask [B, N] (False = padding).
        `inplace` (inference only): `tokens` is updated in place (it must not be needed after)."""
        c = tokens.shape[1]
        padded = point_mask is not None and not bool(point_mask.all())
        indices = []
        for i, (h, w) in enumerate(self.grids_shape):
            ind = cell_ind[:, i]
            if padded:
                ind = torch.where(point_mask, ind, torch.full_like(ind, h * w))
            indices.append(ind.unsqueeze(1).expand(-1, c, -1))
        for d, (smix, cmix) in enumerate(zip(self.spatial_mix, self.channel_mix)):
            tokens = smix(tokens, indices[d % len(indices)], padded, inplace)
            tokens = cmix(tokens, inplace)
        return tokens


class WaffleIron(nn.Module):
    """Embedding -> WaffleIron backbone -> head (official `Segmenter`), built from a config."""

    def __init__(self, config: WaffleIronConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else WaffleIronConfig.scalr_plus()
        c = self.config
        self.embed = Embedding(c.input_channels, c.nb_channels)
        self.waffleiron = WaffleIronBackbone(c)
        if c.head == "mlp":
            self.classif = nn.Sequential(
                nn.Conv1d(c.nb_channels, c.hidden_channels, 1),
                nn.ReLU(inplace=True),
                nn.Conv1d(c.hidden_channels, c.out_channels, 1),
            )
        else:
            self.classif = nn.Conv1d(c.nb_channels, c.out_channels, 1)

    # Presets, so callers can write `WaffleIron.scalr_plus()`.
    @classmethod
    def scalr_plus(cls, **overrides) -> WaffleIron:
        return cls(WaffleIronConfig.scalr_plus(**overrides))

    @classmethod
    def scalr_v1(cls, **overrides) -> WaffleIron:
        return cls(WaffleIronConfig.scalr_v1(**overrides))

    @classmethod
    def waffleiron_nuscenes(cls, **overrides) -> WaffleIron:
        return cls(WaffleIronConfig.waffleiron_nuscenes(**overrides))

    @classmethod
    def waffleiron_semantickitti(cls, **overrides) -> WaffleIron:
        return cls(WaffleIronConfig.waffleiron_semantickitti(**overrides))

    @classmethod
    def tiny(cls, **overrides) -> WaffleIron:
        return cls(WaffleIronConfig.tiny(**overrides))

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def forward(
        self,
        feats: torch.Tensor,
        cell_ind: torch.Tensor,
        neighbors: torch.Tensor,
        point_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """feats [B, C_in, N], cell_ind [B, n_planes, N] long, neighbors [B, N, K] long.

        `point_mask` [B, N] bool marks real points when scans of different sizes are padded to
        one N; padded points must reference only padded points (or themselves) as neighbours.
        Returns [B, out_channels, N].
        """
        self._check_inputs(feats, cell_ind, neighbors, point_mask)
        tokens = self.embed(feats, neighbors)
        if torch.is_autocast_enabled(tokens.device.type):
            tokens = tokens.float()  # keep the 48-layer residual stream in fp32
        tokens = self.waffleiron(tokens, cell_ind, point_mask, inplace=True)
        b, _, n = tokens.shape
        widest = max(m.out_channels for m in self.classif.modules() if isinstance(m, nn.Conv1d))
        chunks = point_chunks(n, 2 * b * widest, self)
        if chunks is None:
            return self.classif(tokens)
        return _chunked(lambda part: self.classif(tokens[..., part]), tokens, chunks)

    def _check_inputs(self, feats, cell_ind, neighbors, point_mask) -> None:
        c = self.config
        if feats.ndim != 3 or feats.shape[1] != c.input_channels:
            raise ValueError(f"feats must be [B, {c.input_channels}, N], got {tuple(feats.shape)}")
        b, _, n = feats.shape
        if tuple(cell_ind.shape) != (b, c.n_planes, n):
            raise ValueError(
                f"cell_ind must be [B, {c.n_planes}, N] = {(b, c.n_planes, n)}, "
                f"got {tuple(cell_ind.shape)}"
            )
        if neighbors.ndim != 3 or tuple(neighbors.shape[:2]) != (b, n):
            raise ValueError(
                f"neighbors must be [B, N, K] = ({b}, {n}, K), got {tuple(neighbors.shape)}"
            )
        if point_mask is not None and tuple(point_mask.shape) != (b, n):
            raise ValueError(f"point_mask must be [B, N] = {(b, n)}, got {tuple(point_mask.shape)}")
