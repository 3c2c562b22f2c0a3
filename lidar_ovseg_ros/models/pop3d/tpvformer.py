"""TPVFormer encoder (the 'tpvformer04' variant POP-3D builds on), in plain PyTorch.

Three tri-perspective-view (TPV) planes of learned queries - hw (top view, y rows x columns),
zh (side view, z rows y columns) and wz (front view, x rows z columns) - are refined by layers of
cross-view hybrid attention (deformable self-attention on the hw plane), image cross-attention
(deformable attention into the multi-camera, multi-scale image features around the projections of
3D reference points), and a feed-forward network. Parameter and buffer names match the official
state dict (`tpv_head.encoder.layers.N.attentions.{0,1}...`, `ffns.0.layers...`, `norms.{0,1,2}`).

Deformable attention samples with `grid_sample` (bilinear, zeros outside, align_corners=False),
the same rule as the CUDA kernel of Deformable DETR / mmcv.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SpatialShapes = Sequence[tuple[int, int]]


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Attention-weighted sum of bilinear samples from a multi-level feature map.

    value: [B, sum(h*w), heads, head_dim] (levels concatenated, each flattened row-major);
    sampling_locations: [B, Q, heads, levels, points, 2] normalised (x, y) in [0, 1] (pixel
    centres at (i + 0.5) / size); attention_weights: [B, Q, heads, levels, points].
    Returns [B, Q, heads * head_dim].
    """
    b, _, heads, head_dim = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    if len(spatial_shapes) != levels:
        raise ValueError(f"{len(spatial_shapes)} spatial shapes for {levels} levels")
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(f"spatial shapes cover {sum(sizes)} values, value has {value.shape[1]}")
    # Locations more than a pixel outside sample only zeros; clamping keeps huge projections
    # (points behind a camera) finite without changing any result.
    grids = 2.0 * sampling_locations.clamp(-1.0, 2.0) - 1.0
    out = value.new_zeros(b * heads, head_dim, q)
    for lvl, (v, (h, w)) in enumerate(zip(value.split(sizes, dim=1), spatial_shapes, strict=True)):
        v = v.permute(0, 2, 3, 1).reshape(b * heads, head_dim, int(h), int(w))
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(b * heads, q, points, 2)
        s = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        a = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(b * heads, 1, q, points)
        out = out + (s * a).sum(-1)
    return out.view(b, heads * head_dim, q).transpose(1, 2)


class LearnedPositionalEncoding(nn.Module):
    """mmdet's learned 2D positional encoding: [column embedding, row embedding] per cell."""

    def __init__(self, num_feats: int, row_num_embed: int, col_num_embed: int) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(row_num_embed, num_feats)
        self.col_embed = nn.Embedding(col_num_embed, num_feats)

    def forward(self, h: int, w: int) -> torch.Tensor:
        """[h * w, 2 * num_feats], row-major over (h, w)."""
        device = self.row_embed.weight.device
        x_embed = self.col_embed(torch.arange(w, device=device))  # [w, F]
        y_embed = self.row_embed(torch.arange(h, device=device))  # [h, F]
        pos = torch.cat(
            (x_embed.unsqueeze(0).expand(h, w, -1), y_embed.unsqueeze(1).expand(h, w, -1)), dim=-1
        )
        return pos.reshape(h * w, -1)


class TPVCrossViewHybridAttention(nn.Module):
    """Deformable self-attention over the hw plane with two identical 'queues' (BEVFormer style).

    Offsets and weights come from [query, query + pos] (2 * embed_dims inputs); the outputs of
    the two queues are averaged.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 1,
        num_points: int = 4,
        num_tpv_queue: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} not divisible by num_heads {num_heads}")
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points, self.num_tpv_queue = num_levels, num_points, num_tpv_queue
        n = num_tpv_queue * num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dims * num_tpv_queue, n * 2)
        self.attention_weights = nn.Linear(embed_dims * num_tpv_queue, n)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels * self.num_tpv_queue, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor | None,
        reference_points: torch.Tensor,
        spatial_shapes: SpatialShapes,
    ) -> torch.Tensor:
        """query: [B, Q, C]; reference_points: [B, Q, levels, 2] normalised; returns [B, Q, C]."""
        bs, nq, _ = query.shape
        nqueue, heads, levels, points = (
            self.num_tpv_queue,
            self.num_heads,
            self.num_levels,
            self.num_points,
        )
        identity = query
        value = torch.cat([query] * nqueue, 0)  # [nqueue * B, Q, C], queue-major
        q = query if query_pos is None else query + query_pos
        q = torch.cat([query, q], -1)
        value = self.value_proj(value).view(nqueue * bs, nq, heads, -1)
        offsets = self.sampling_offsets(q).view(bs, nq, heads, nqueue, levels, points, 2)
        weights = self.attention_weights(q).view(bs, nq, heads, nqueue, levels * points)
        weights = weights.softmax(-1).view(bs, nq, heads, nqueue, levels, points)
        weights = weights.permute(3, 0, 1, 2, 4, 5).reshape(nqueue * bs, nq, heads, levels, points)
        offsets = offsets.permute(3, 0, 1, 2, 4, 5, 6).reshape(
            nqueue * bs, nq, heads, levels, points, 2
        )
        normalizer = query.new_tensor([[w, h] for h, w in spatial_shapes])
        ref = torch.cat([reference_points] * nqueue, 0)
        locations = ref[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = multi_scale_deformable_attn(value, spatial_shapes, locations, weights)
        out = out.view(nqueue, bs, nq, -1).mean(0)
        return self.dropout(self.output_proj(out)) + identity


class TPVMSDeformableAttention3D(nn.Module):
    """Deformable attention from TPV queries into one camera's multi-scale features.

    Each query of plane i owns `num_z_anchors[i]` 3D anchors along its pillar; it is split into
    `num_z_anchors[i] // num_z_anchors[0]` sub-queries of `num_z_anchors[0]` anchors, each with
    `num_points[0]` samples, and the sub-query outputs are summed (the softmax runs over all of
    the query's samples together).
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: Sequence[int] = (8, 64, 64),
        num_z_anchors: Sequence[int] = (4, 32, 32),
        floor_sampling_offset: bool = False,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} not divisible by num_heads {num_heads}")
        if len(num_points) != 3 or len(num_z_anchors) != 3:
            raise ValueError("num_points and num_z_anchors need one entry per TPV plane (3)")
        self.embed_dims, self.num_heads, self.num_levels = embed_dims, num_heads, num_levels
        self.num_points = tuple(int(p) for p in num_points)
        self.num_z_anchors = tuple(int(z) for z in num_z_anchors)
        self.points_multiplier = [z // self.num_z_anchors[0] for z in self.num_z_anchors]
        per_sub = {p // m for p, m in zip(self.num_points, self.points_multiplier, strict=True)}
        if len(per_sub) != 1 or any(
            p % m for p, m in zip(self.num_points, self.points_multiplier, strict=True)
        ):
            raise ValueError(
                f"num_points {self.num_points} and num_z_anchors {self.num_z_anchors} must give "
                "every plane the same number of points per sub-query"
            )
        self.floor_sampling_offset = floor_sampling_offset
        self.sampling_offsets = nn.ModuleList(
            nn.Linear(embed_dims, num_heads * num_levels * p * 2) for p in self.num_points
        )
        self.attention_weights = nn.ModuleList(
            nn.Linear(embed_dims, num_heads * num_levels * p) for p in self.num_points
        )
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        base = torch.stack([thetas.cos(), thetas.sin()], -1)
        base = (base / base.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        for i in range(3):
            nn.init.zeros_(self.sampling_offsets[i].weight)
            grid = base.repeat(1, self.num_levels, self.num_points[i], 1)
            grid = grid.reshape(self.num_heads, self.num_levels, self.num_z_anchors[i], -1, 2)
            scale = torch.arange(1, grid.shape[3] + 1, dtype=torch.float32).view(1, 1, 1, -1, 1)
            with torch.no_grad():
                self.sampling_offsets[i].bias.copy_((grid * scale).reshape(-1))
            nn.init.zeros_(self.attention_weights[i].weight)
            nn.init.zeros_(self.attention_weights[i].bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)

    def forward(
        self,
        queries: Sequence[torch.Tensor],
        value: torch.Tensor,
        reference_points: Sequence[torch.Tensor],
        spatial_shapes: SpatialShapes,
    ) -> list[torch.Tensor]:
        """queries[i]: [B, n_i, C]; value: [B, sum(h*w), C] (not yet projected);
        reference_points[i]: [B, n_i, num_z_anchors[i], 2] normalised image coordinates.
        Returns one [B, n_i, C] tensor per plane."""
        bs, nv, _ = value.shape
        heads, levels = self.num_heads, self.num_levels
        value = self.value_proj(value).view(bs, nv, heads, -1)
        offsets, weights, refs, lens = [], [], [], []
        for i, (q, ref) in enumerate(zip(queries, reference_points, strict=True)):
            n, pm = q.shape[1], self.points_multiplier[i]
            off = self.sampling_offsets[i](q).view(bs, n, heads, levels, pm, -1, 2)
            offsets.append(off.permute(0, 1, 4, 2, 3, 5, 6).flatten(1, 2))
            att = self.attention_weights[i](q).view(bs, n, heads, -1).softmax(-1)
            att = att.view(bs, n, heads, levels, pm, -1).permute(0, 1, 4, 2, 3, 5).flatten(1, 2)
            weights.append(att)
            refs.append(ref.reshape(bs, n, pm, -1, 2).flatten(1, 2))
            lens.append(n * pm)
        off = torch.cat(offsets, 1)  # [B, Q', heads, levels, P, 2]
        att = torch.cat(weights, 1)  # [B, Q', heads, levels, P]
        ref = torch.cat(refs, 1)  # [B, Q', A, 2]
        nq, anchors = ref.shape[1], ref.shape[2]
        points = off.shape[4]
        normalizer = value.new_tensor([[w, h] for h, w in spatial_shapes])
        off = off / normalizer[None, None, None, :, None, :]
        off = off.view(bs, nq, heads, levels, anchors, points // anchors, 2)
        loc = ref[:, :, None, None, :, None, :] + off
        loc = loc.view(bs, nq, heads, levels, points, 2)
        if self.floor_sampling_offset:
            loc = loc - torch.floor(loc)
        out = multi_scale_deformable_attn(value, spatial_shapes, loc, att)
        outs = out.split(lens, dim=1)
        return [
            o.view(bs, -1, pm, o.shape[-1]).sum(2)
            for o, pm in zip(outs, self.points_multiplier, strict=True)
        ]


class TPVImageCrossAttention(nn.Module):
    """Each TPV query attends to the cameras that see any of its anchors; results are averaged
    over those cameras, projected, and added to the query."""

    def __init__(
        self,
        embed_dims: int,
        tpv_h: int,
        tpv_w: int,
        tpv_z: int,
        deformable_attention: TPVMSDeformableAttention3D,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.tpv_h, self.tpv_w, self.tpv_z = tpv_h, tpv_w, tpv_z
        self.deformable_attention = deformable_attention
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        value: torch.Tensor,
        reference_points_cams: Sequence[torch.Tensor],
        tpv_masks: Sequence[torch.Tensor],
        spatial_shapes: SpatialShapes,
    ) -> torch.Tensor:
        """query: [B, Nq, C]; value: [B, Ncam, L, C]; reference_points_cams[i]:
        [Ncam, B, n_i, D_i, 2]; tpv_masks[i]: [Ncam, B, n_i, D_i] -> [B, Nq, C]."""
        sizes = [self.tpv_h * self.tpv_w, self.tpv_z * self.tpv_h, self.tpv_w * self.tpv_z]
        queries = torch.split(query, sizes, dim=1)
        slots = [torch.zeros_like(q) for q in queries]
        visible = [m.any(-1) for m in tpv_masks]  # [Ncam, B, n_i]
        bs, ncam = query.shape[0], value.shape[1]
        for b in range(bs):
            for cam in range(ncam):
                idx = [v[cam, b].nonzero().squeeze(-1) for v in visible]
                if all(i.numel() == 0 for i in idx):
                    continue
                outs = self.deformable_attention(
                    [q[b : b + 1, i] for q, i in zip(queries, idx, strict=True)],
                    value[b : b + 1, cam],
                    [r[cam, b : b + 1, i] for r, i in zip(reference_points_cams, idx, strict=True)],
                    spatial_shapes,
                )
                for slot, i, o in zip(slots, idx, outs, strict=True):
                    slot[b].index_add_(0, i, o[0])
        counts = [v.sum(0).clamp(min=1).to(query.dtype) for v in visible]  # [B, n_i]
        out = torch.cat([s / c[..., None] for s, c in zip(slots, counts, strict=True)], dim=1)
        return self.dropout(self.output_proj(out)) + query


class FFN(nn.Module):
    """mmcv's FFN: `layers.0` = (Linear, ReLU, Dropout), `layers.1` = Linear, `layers.2` =
    Dropout, plus the identity."""

    def __init__(self, embed_dims: int, feedforward_channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(
                nn.Linear(embed_dims, feedforward_channels),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class TPVFormerLayer(nn.Module):
    """self_attn (hw plane) -> norm -> cross_attn (images) -> norm -> ffn -> norm."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        feedforward_channels: int,
        tpv_h: int,
        tpv_w: int,
        tpv_z: int,
        num_levels: int,
        num_points: Sequence[int],
        num_z_anchors: Sequence[int],
        self_attn_points: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tpv_h, self.tpv_w, self.tpv_z = tpv_h, tpv_w, tpv_z
        self.attentions = nn.ModuleList(
            [
                TPVCrossViewHybridAttention(
                    embed_dims,
                    num_heads,
                    num_levels=1,
                    num_points=self_attn_points,
                    dropout=dropout,
                ),
                TPVImageCrossAttention(
                    embed_dims,
                    tpv_h,
                    tpv_w,
                    tpv_z,
                    TPVMSDeformableAttention3D(
                        embed_dims, num_heads, num_levels, num_points, num_z_anchors
                    ),
                    dropout=dropout,
                ),
            ]
        )
        self.ffns = nn.ModuleList([FFN(embed_dims, feedforward_channels, dropout)])
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))

    def forward(
        self,
        query: Sequence[torch.Tensor],
        value: torch.Tensor,
        tpv_pos_hw: torch.Tensor | None,
        ref_2d: torch.Tensor,
        reference_points_cams: Sequence[torch.Tensor],
        tpv_masks: Sequence[torch.Tensor],
        spatial_shapes: SpatialShapes,
    ) -> list[torch.Tensor]:
        hw = self.attentions[0](query[0], tpv_pos_hw, ref_2d, [(self.tpv_h, self.tpv_w)])
        x = self.norms[0](torch.cat([hw, query[1], query[2]], dim=1))
        x = self.norms[1](
            self.attentions[1](x, value, reference_points_cams, tpv_masks, spatial_shapes)
        )
        x = self.norms[2](self.ffns[0](x))
        sizes = [self.tpv_h * self.tpv_w, self.tpv_z * self.tpv_h, self.tpv_w * self.tpv_z]
        return list(torch.split(x, sizes, dim=1))


def reference_points_3d(h: int, w: int, z_extent: float, num_points: int) -> torch.Tensor:
    """[1, num_points, h * w, 3] normalised (x over w, y over h, z up the pillar) anchors."""
    zs = torch.linspace(0.5, z_extent - 0.5, num_points).view(-1, 1, 1).expand(num_points, h, w)
    xs = torch.linspace(0.5, w - 0.5, w).view(1, 1, -1).expand(num_points, h, w)
    ys = torch.linspace(0.5, h - 0.5, h).view(1, -1, 1).expand(num_points, h, w)
    ref = torch.stack((xs / w, ys / h, zs / z_extent), -1)
    return ref.reshape(num_points, h * w, 3)[None].contiguous()


def reference_points_2d(h: int, w: int) -> torch.Tensor:
    """[1, h * w, 1, 2] normalised (x, y) cell centres, row-major."""
    ys, xs = torch.meshgrid(
        torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w), indexing="ij"
    )
    ref = torch.stack((xs.reshape(-1) / w, ys.reshape(-1) / h), -1)
    return ref[None, :, None, :].contiguous()


class TPVFormerEncoder(nn.Module):
    """Stack of TPVFormer layers plus the fixed 3D/2D reference points of the three planes
    (registered as buffers, as in the official state dict)."""

    def __init__(
        self,
        tpv_h: int,
        tpv_w: int,
        tpv_z: int,
        pc_range: Sequence[float],
        num_points_in_pillar: Sequence[int],
        layers: Sequence[TPVFormerLayer],
    ) -> None:
        super().__init__()
        n0, n1, n2 = (int(n) for n in num_points_in_pillar)
        if n1 != n2 or n1 % n0:
            raise ValueError(
                f"num_points_in_pillar {tuple(num_points_in_pillar)}: the zh and wz entries must "
                "be equal and a multiple of the hw entry"
            )
        self.tpv_h, self.tpv_w, self.tpv_z = tpv_h, tpv_w, tpv_z
        self.pc_range = tuple(float(v) for v in pc_range)
        x0, y0, z0, x1, y1, z1 = self.pc_range
        ref_hw = reference_points_3d(tpv_h, tpv_w, z1 - z0, n0)
        # zh plane: rows z, columns y, pillar along x -> components (x, y, z) = (pillar, col, row)
        ref_zh = reference_points_3d(tpv_z, tpv_h, x1 - x0, n1)[..., [2, 0, 1]].contiguous()
        # wz plane: rows x, columns z, pillar along y -> (x, y, z) = (row, pillar, col)
        ref_wz = reference_points_3d(tpv_w, tpv_z, y1 - y0, n2)[..., [1, 2, 0]].contiguous()
        self.register_buffer("ref_3d_hw", ref_hw)
        self.register_buffer("ref_3d_zh", ref_zh)
        self.register_buffer("ref_3d_wz", ref_wz)
        self.register_buffer("ref_2d_hw", reference_points_2d(tpv_h, tpv_w))
        self.register_buffer("ref_2d_zh", reference_points_2d(tpv_z, tpv_h))
        self.register_buffer("ref_2d_wz", reference_points_2d(tpv_w, tpv_z))
        self.layers = nn.ModuleList(layers)

    def point_sampling(
        self, reference_points: torch.Tensor, lidar2img: torch.Tensor, image_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project normalised 3D anchors [1, D, n, 3] with lidar2img [B, Ncam, 4, 4].

        Returns image coordinates normalised by the (padded) image size [Ncam, B, n, D, 2] and
        the mask of anchors in front of the camera and strictly inside the image [Ncam, B, n, D].
        """
        x0, y0, z0, x1, y1, z1 = self.pc_range
        ref = reference_points[0].to(torch.float32)
        lo = ref.new_tensor([x0, y0, z0])
        ref = ref * ref.new_tensor([x1 - x0, y1 - y0, z1 - z0]) + lo
        ref = torch.cat((ref, torch.ones_like(ref[..., :1])), -1)  # [D, n, 4]
        cam = torch.einsum("bcij,dnj->cbndi", lidar2img.to(torch.float32), ref)
        eps = 1e-5
        depth = cam[..., 2:3]
        mask = depth > eps
        uv = cam[..., 0:2] / torch.maximum(depth, torch.full_like(depth, eps))
        uv = uv / uv.new_tensor([float(image_hw[1]), float(image_hw[0])])
        mask = (
            mask
            & (uv[..., 1:2] > 0.0)
            & (uv[..., 1:2] < 1.0)
            & (uv[..., 0:1] < 1.0)
            & (uv[..., 0:1] > 0.0)
        )
        return uv, mask.squeeze(-1)

    def forward(
        self,
        tpv_query: Sequence[torch.Tensor],
        value: torch.Tensor,
        lidar2img: torch.Tensor,
        image_hw: tuple[int, int],
        tpv_pos_hw: torch.Tensor | None,
        spatial_shapes: SpatialShapes,
    ) -> list[torch.Tensor]:
        bs = tpv_query[0].shape[0]
        cams, masks = [], []
        for ref in (self.ref_3d_hw, self.ref_3d_zh, self.ref_3d_wz):
            uv, mask = self.point_sampling(ref, lidar2img, image_hw)
            cams.append(uv)
            masks.append(mask)
        ref_2d = self.ref_2d_hw.expand(bs, -1, -1, -1)
        out = list(tpv_query)
        for layer in self.layers:
            out = layer(out, value, tpv_pos_hw, ref_2d, cams, masks, spatial_shapes)
        return out


class TPVFormerHead(nn.Module):
    """Learned TPV queries + camera/level embeddings + the encoder (official `tpv_head`)."""

    def __init__(
        self,
        tpv_h: int,
        tpv_w: int,
        tpv_z: int,
        pc_range: Sequence[float],
        num_feature_levels: int,
        num_cams: int,
        embed_dims: int,
        encoder: TPVFormerEncoder,
    ) -> None:
        super().__init__()
        self.tpv_h, self.tpv_w, self.tpv_z = tpv_h, tpv_w, tpv_z
        self.embed_dims = embed_dims
        self.num_feature_levels, self.num_cams = num_feature_levels, num_cams
        self.positional_encoding = LearnedPositionalEncoding(embed_dims // 2, tpv_h, tpv_w)
        self.register_buffer("tpv_mask_hw", torch.zeros(1, tpv_h, tpv_w))
        self.encoder = encoder
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims))
        self.tpv_embedding_hw = nn.Embedding(tpv_h * tpv_w, embed_dims)
        self.tpv_embedding_zh = nn.Embedding(tpv_z * tpv_h, embed_dims)
        self.tpv_embedding_wz = nn.Embedding(tpv_w * tpv_z, embed_dims)
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)

    def forward(
        self,
        mlvl_feats: Sequence[torch.Tensor],
        lidar2img: torch.Tensor,
        image_hw: tuple[int, int],
    ) -> list[torch.Tensor]:
        """mlvl_feats[l]: [B, Ncam, C, h_l, w_l] -> [hw [B, H*W, C], zh [B, Z*H, C],
        wz [B, W*Z, C]]."""
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(
                f"{len(mlvl_feats)} feature levels, expected {self.num_feature_levels}"
            )
        bs, ncam = mlvl_feats[0].shape[:2]
        if ncam != self.num_cams:
            raise ValueError(f"{ncam} cameras, the network was built for {self.num_cams}")
        dtype = mlvl_feats[0].dtype
        queries = [
            e.weight.to(dtype).unsqueeze(0).expand(bs, -1, -1)
            for e in (self.tpv_embedding_hw, self.tpv_embedding_zh, self.tpv_embedding_wz)
        ]
        pos_hw = self.positional_encoding(self.tpv_h, self.tpv_w).to(dtype).unsqueeze(0)
        feats, shapes = [], []
        for lvl, feat in enumerate(mlvl_feats):
            h, w = feat.shape[-2:]
            f = feat.flatten(3).transpose(2, 3)  # [B, Ncam, h*w, C]
            f = f + self.cams_embeds[None, :, None, :].to(dtype)
            f = f + self.level_embeds[None, None, lvl : lvl + 1, :].to(dtype)
            feats.append(f)
            shapes.append((int(h), int(w)))
        value = torch.cat(feats, 2)  # [B, Ncam, sum(h*w), C]
        return self.encoder(queries, value, lidar2img, image_hw, pos_hw, shapes)
