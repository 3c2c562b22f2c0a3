"""SMAP head (3D-AVS point captioner): sectors, the official float padding mask, the 3x3x3 CPE
against a MinkowskiEngine-semantics reference, official checkpoint layout, the bundled frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidar_ovseg_ros.autovocab.smap import (
    SmapCheckpointError,
    SmapConfig,
    SmapHead,
    attention_pool,
    build_smap_head,
    compare_trunks,
    load_smap_checkpoint,
    sector_masks,
    split_smap_state_dict,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = SmapConfig(input_dim=12, embed_dim=8, output_dim=6, num_heads=2)


def voxelize_first(xyz: np.ndarray, size: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coords (min subtracted) and the index of each voxel's first point."""
    q = np.floor(xyz / size).astype(np.int64)
    q -= q.min(axis=0)
    _, first = np.unique(q, axis=0, return_index=True)
    first = np.sort(first)
    return q[first], first


def official_pool(head: SmapHead, x: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """The official call: F.multi_head_attention_forward with a float key_padding_mask."""
    counts = masks.sum(axis=0)
    s, max_n, e = masks.shape[1], int(counts.max()), x.shape[1]
    query = torch.zeros((1, s, e))
    keys = torch.zeros((s, max_n, e))
    pad = torch.zeros((s, max_n))
    for j in range(s):
        sel = x[torch.from_numpy(masks[:, j])]
        query[0, j] = F.adaptive_avg_pool2d(sel.unsqueeze(0), (1, e))[0, 0]
        keys[j, : len(sel)] = sel
        pad[j, len(sel) :] = 1
    out, _ = F.multi_head_attention_forward(
        query=query,
        key=keys.transpose(1, 0),
        value=keys.transpose(1, 0),
        embed_dim_to_check=e,
        num_heads=head.config.num_heads,
        in_proj_weight=None,
        in_proj_bias=torch.cat([head.q_proj.bias, head.k_proj.bias, head.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=head.c_proj.weight,
        out_proj_bias=head.c_proj.bias,
        training=False,
        key_padding_mask=pad,
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=head.q_proj.weight,
        k_proj_weight=head.k_proj.weight,
        v_proj_weight=head.v_proj.weight,
    )
    return out[0]


def test_sector_bounds_follow_the_official_half_open_intervals():
    step = math.pi / 6
    angles = np.array([-math.pi, -math.pi + step, -0.0001, 0.0, 0.5 * step, math.pi - 1e-3])
    pts = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1) * 10
    m = sector_masks(pts)
    assert m.shape == (6, 12)
    assert m.sum(axis=1).tolist() == [1] * 6
    assert np.argmax(m, axis=1).tolist() == [0, 1, 5, 6, 6, 11]
    # atan2(0, -x) = +pi in float32 lies above the last bound: in no sector, as officially
    assert not sector_masks(np.array([[-5.0, 0.0, 0.0]])).any()


def test_float_padding_mask_adds_one_to_padded_logits_hand_computed():
    """Two sectors, 3 and 1 keys: the second gets 2 padded zero keys with logit +1."""
    torch.manual_seed(3)
    e, h = 4, 2
    lin = [torch.nn.Linear(e, e) for _ in range(4)]
    q_proj, k_proj, v_proj, c_proj = lin
    keys = torch.zeros(2, 3, e)
    keys[0] = torch.randn(3, e)
    keys[1, 0] = torch.randn(e)
    pad = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    query = torch.stack([keys[0].mean(0), keys[1, 0]])
    got = attention_pool(query, keys, pad, q_proj, k_proj, v_proj, c_proj, h, "official")

    # by hand: per head, softmax(q.k/sqrt(d) + pad) over ALL slots, padded slots included
    d = e // h
    expected = []
    for s in range(2):
        q = q_proj(query[s])
        heads = []
        for hh in range(h):
            sl = slice(hh * d, (hh + 1) * d)
            logits = []
            vals = []
            for m in range(3):
                k = k_proj(keys[s, m])  # a zero key projects to the bias
                logits.append(float((q[sl] @ k[sl]).detach()) / math.sqrt(d) + float(pad[s, m]))
                vals.append(v_proj(keys[s, m])[sl])
            w = np.exp(np.array(logits) - max(logits))
            w /= w.sum()
            heads.append(sum(float(wi) * vi for wi, vi in zip(w, vals)))
        expected.append(c_proj(torch.cat(heads)))
    expected = torch.stack(expected)
    assert torch.allclose(got, expected, atol=1e-6)
    # the padded keys really matter: the textbook -inf mask gives another result for sector 1
    masked = attention_pool(query, keys, pad, q_proj, k_proj, v_proj, c_proj, h, "masked")
    assert torch.allclose(masked[0], got[0], atol=1e-6)
    assert not torch.allclose(masked[1], got[1], atol=1e-4)
    # and equals torch's own MHA with the official float key_padding_mask
    ref, _ = F.multi_head_attention_forward(
        query.unsqueeze(0),
        keys.transpose(0, 1),
        keys.transpose(0, 1),
        e,
        h,
        None,
        torch.cat([q_proj.bias, k_proj.bias, v_proj.bias]),
        None,
        None,
        False,
        0.0,
        c_proj.weight,
        c_proj.bias,
        training=False,
        key_padding_mask=pad,
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=q_proj.weight,
        k_proj_weight=k_proj.weight,
        v_proj_weight=v_proj.weight,
    )
    assert torch.allclose(got, ref[0].detach(), atol=1e-6)


def me_reference_conv(coords: np.ndarray, x: np.ndarray, kernel: np.ndarray, bias: np.ndarray):
    """Stride-1 3x3x3 MinkowskiEngine conv on its own coordinates: out[p] = b + sum_k
    W[k]^T x[p + off_k], offset k = a + 3b + 9c -> (a-1, b-1, c-1) (axis 0 fastest)."""
    index = {tuple(c): i for i, c in enumerate(coords.tolist())}
    out = np.tile(bias.reshape(1, -1), (len(coords), 1)).astype(np.float64)
    for k in range(27):
        off = np.array([k % 3 - 1, (k // 3) % 3 - 1, k // 9 - 1])
        for i, c in enumerate(coords):
            j = index.get(tuple((c + off).tolist()))
            if j is not None:
                out[i] += x[j] @ kernel[k]
    return out


def test_cpe_matches_minkowski_semantics_and_in_proj_is_affine():
    rng = np.random.default_rng(0)
    coords = np.unique(rng.integers(0, 5, size=(60, 3)), axis=0)
    n = len(coords)
    cfg = SmapConfig(input_dim=5, embed_dim=4, output_dim=4, num_heads=2)
    e = cfg.embed_dim
    official = {
        "in_proj.kernel": torch.randn(5, e),
        "in_proj.bias": torch.randn(1, e),
        "cpe.kernel": torch.randn(27, e, e),
        "cpe.bias": torch.randn(1, e),
        "linear.weight": torch.randn(e, e),
        "linear.bias": torch.randn(e),
        "norm.weight": torch.randn(e),
        "norm.bias": torch.randn(e),
    }
    for p in "qkvc":
        official[f"{p}_proj.weight"] = torch.randn(e, e)
        official[f"{p}_proj.bias"] = torch.randn(e)
    state = {f"attn_layer.{k}": v for k, v in official.items()}
    state["net3d.final.kernel"] = torch.randn(96, 5)
    ckpt = split_smap_state_dict(state, cfg)
    head = build_smap_head(ckpt, cfg)
    feats = torch.randn(n, 5)
    with torch.no_grad():
        got = head.encode_voxels(feats, torch.from_numpy(coords))
    x = (
        feats.numpy().astype(np.float64) @ official["in_proj.kernel"].numpy()
        + official["in_proj.bias"].numpy()
    )
    res = me_reference_conv(
        coords, x, official["cpe.kernel"].double().numpy(), official["cpe.bias"].numpy()
    )
    res = torch.from_numpy(res).float()
    expected = torch.from_numpy(x).float() + F.layer_norm(
        res @ official["linear.weight"].T + official["linear.bias"],
        (e,),
        official["norm.weight"],
        official["norm.bias"],
    )
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_pool_sectors_equals_official_multi_head_attention_call():
    torch.manual_seed(0)
    head = build_smap_head(config=TINY, seed=1)
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(200, 3)) * 20
    masks = sector_masks(pts)
    assert (masks.sum(0) > 0).all()
    x = torch.randn(200, TINY.embed_dim)
    with torch.no_grad():
        got = head.pool_sectors(x, masks)
        ref = official_pool(head, x, masks)
    assert got.valid.all()
    assert got.counts.tolist() == masks.sum(0).tolist()
    assert torch.allclose(got.embeddings, ref, atol=1e-5)


def test_empty_sectors_get_no_embedding_and_do_not_change_the_others():
    head = build_smap_head(config=TINY, seed=2)
    rng = np.random.default_rng(2)
    # points only in front (x > 0): sectors 0-2 and 9-11 (|phi| > 90 deg) are empty
    phi = rng.uniform(-math.pi / 2 + 0.01, math.pi / 2 - 0.01, size=120)
    pts = np.stack([np.cos(phi), np.sin(phi), rng.normal(size=120)], axis=1) * 10
    masks = sector_masks(pts)
    x = torch.randn(120, TINY.embed_dim)
    with torch.no_grad():
        got = head.pool_sectors(x, masks)
        sub = np.flatnonzero(masks.sum(0) > 0)
        ref = official_pool(head, x, masks[:, sub])
    assert not got.valid[[0, 1, 2, 9, 10, 11]].any()
    assert torch.equal(
        got.embeddings[~torch.from_numpy(got.valid)], torch.zeros(6, TINY.output_dim)
    )
    assert torch.allclose(got.embeddings[torch.from_numpy(sub)], ref, atol=1e-5)
    # nothing at all: no crash, nothing valid
    with torch.no_grad():
        none = head(
            torch.zeros(0, TINY.input_dim), torch.zeros(0, 3, dtype=torch.int32), np.zeros((0, 3))
        )
    assert not none.valid.any() and none.embeddings.shape == (12, TINY.output_dim)


def test_forward_on_the_bundled_nuscenes_scan(nuscenes_frame):
    xyz = nuscenes_frame.xyz
    coords, first = voxelize_first(xyz)
    head = build_smap_head(config=TINY, seed=3)
    feats = torch.randn(len(coords), TINY.input_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = head(feats, torch.from_numpy(coords), xyz[first])
        again = head(feats, torch.from_numpy(coords), xyz[first])
    assert out.embeddings.shape == (12, TINY.output_dim)
    assert out.valid.all() and out.counts.sum() == len(coords)
    assert torch.isfinite(out.embeddings).all()
    assert torch.equal(out.embeddings, again.embeddings)
    # pooling only a subset (the official key-frame mask) changes the pooled voxels only
    pooled = np.zeros(len(coords), bool)
    pooled[::2] = True
    with torch.no_grad():
        half = head(feats, torch.from_numpy(coords), xyz[first], pooled=pooled)
    assert half.counts.sum() == pooled.sum()


def official_state(cfg: SmapConfig, prefix: str = "") -> dict[str, torch.Tensor]:
    e = cfg.embed_dim
    state = {
        "net3d.conv0p1s1.kernel": torch.randn(125, 3, 32),
        "net3d.final.kernel": torch.randn(96, cfg.input_dim),
        "attn_layer.in_proj.kernel": torch.randn(cfg.input_dim, e),
        "attn_layer.in_proj.bias": torch.randn(1, e),
        "attn_layer.cpe.kernel": torch.randn(27, e, e),
        "attn_layer.cpe.bias": torch.randn(1, e),
        "attn_layer.linear.weight": torch.randn(e, e),
        "attn_layer.linear.bias": torch.randn(e),
        "attn_layer.norm.weight": torch.randn(e),
        "attn_layer.norm.bias": torch.randn(e),
    }
    for p in "qkv":
        state[f"attn_layer.{p}_proj.weight"] = torch.randn(e, e)
        state[f"attn_layer.{p}_proj.bias"] = torch.randn(e)
    state["attn_layer.c_proj.weight"] = torch.randn(cfg.output_dim, e)
    state["attn_layer.c_proj.bias"] = torch.randn(cfg.output_dim)
    return {prefix + k: v for k, v in state.items()}


def test_official_checkpoint_format_loads_with_keys_checked(tmp_path):
    cfg = SmapConfig()  # full size: 768 -> 512, 8 heads
    state = official_state(cfg, prefix="module.")
    path = tmp_path / "smap_model_epoch_20.pth.tar"
    torch.save(
        {"epoch": 20, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path
    )
    ckpt = load_smap_checkpoint(path, cfg)
    assert ckpt.epoch == 20
    assert set(ckpt.trunk) == {"conv0p1s1.kernel", "final.kernel"}
    head = build_smap_head(ckpt, cfg)
    assert torch.equal(head.in_proj.weight, state["module.attn_layer.in_proj.kernel"].T)
    w = state["module.attn_layer.cpe.kernel"]
    # W_sp[o, a, b, c, i] == W_ME[a + 3b + 9c, i, o]
    assert torch.equal(head.cpe.weight[7, 2, 0, 1, 5], w[2 + 0 + 9, 5, 7])

    bad = dict(state)
    bad.pop("module.attn_layer.q_proj.bias")
    bad["module.attn_layer.gap.weight"] = torch.zeros(1)
    torch.save({"epoch": 1, "state_dict": bad}, path)
    with pytest.raises(SmapCheckpointError, match=r"missing \['attn_layer.q_proj.bias'\]"):
        load_smap_checkpoint(path, cfg)
    wrong = official_state(cfg)
    wrong["attn_layer.cpe.kernel"] = torch.randn(27, 512, 256)
    with pytest.raises(SmapCheckpointError, match=r"cpe\.kernel has shape"):
        split_smap_state_dict(wrong, cfg)


def test_compare_trunks_reports_differences():
    a = {"conv0p1s1.kernel": torch.ones(2, 2), "bn0.bn.num_batches_tracked": torch.tensor(3)}
    same = compare_trunks(a, {f"net3d.{k}": v.clone() for k, v in a.items()})
    assert same.identical and "shared" in same.summary()
    b = {"conv0p1s1.kernel": torch.ones(2, 2) * 1.5, "final.kernel": torch.zeros(1)}
    diff = compare_trunks(a, b)
    assert not diff.identical
    assert diff.differing == ["conv0p1s1.kernel"] and diff.max_abs_diff == 0.5
    assert diff.only_in_smap == ["bn0.bn.num_batches_tracked"]
    assert diff.only_in_openscene == ["final.kernel"]


def test_cpe_is_exact_with_several_torch_threads(nuscenes_frame):
    """spconv 2.3.8 on CPU is wrong with >1 torch thread; the head guards its conv."""
    coords, _ = voxelize_first(nuscenes_frame.xyz, 0.2)
    cfg = SmapConfig(input_dim=32, embed_dim=32, output_dim=8, num_heads=2)
    head = build_smap_head(config=cfg, seed=4)
    feats = torch.randn(len(coords), 32, generator=torch.Generator().manual_seed(1))
    c = torch.from_numpy(coords)
    with torch.no_grad():
        one = head.encode_voxels(feats, c)
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            runs = [head.encode_voxels(feats, c) for _ in range(3)]
        finally:
            torch.set_num_threads(before)
    for r in runs:
        assert torch.allclose(r, one, atol=1e-5)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("padding", ["official", "masked"])
def test_unbuilt_padding_equals_the_padded_attention(padding):
    """pool_sectors never builds the zero padding; it equals attention over the padded keys,
    here with very unequal sectors (1 key against 300)."""
    import dataclasses

    cfg = dataclasses.replace(TINY, padding=padding)
    head = build_smap_head(config=cfg, seed=5)
    rng = np.random.default_rng(5)
    phi = np.concatenate([rng.uniform(-3.0, -2.7, 300), [0.1], rng.uniform(1.0, 1.5, 20)])
    pts = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], axis=1) * 10
    masks = sector_masks(pts)
    x = torch.randn(len(pts), cfg.embed_dim, generator=torch.Generator().manual_seed(5)) * 3
    sub = np.flatnonzero(masks.sum(0) > 0)
    m = masks[:, sub]
    max_n = int(m.sum(0).max())
    keys = torch.zeros(len(sub), max_n, cfg.embed_dim)
    pad = torch.ones(len(sub), max_n)
    for r in range(len(sub)):
        sel = x[torch.from_numpy(m[:, r])]
        keys[r, : len(sel)] = sel
        pad[r, : len(sel)] = 0
    query = torch.stack([x[torch.from_numpy(m[:, r])].mean(0) for r in range(len(sub))])
    with torch.no_grad():
        got = head.pool_sectors(x, masks).embeddings[torch.from_numpy(sub)]
        ref = attention_pool(
            query, keys, pad, head.q_proj, head.k_proj, head.v_proj, head.c_proj, 2, padding
        )
    assert max_n == 300 and m.sum(0).min() == 1
    assert torch.allclose(got, ref, atol=1e-5)
