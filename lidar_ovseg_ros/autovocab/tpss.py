"""TPSS (text-point semantic similarity), the label-free score 3D-AVS reports for a vocabulary.

The paper's definition (the body of the official function is not released): the mean, over the
labeled points, of the cosine between each point's feature and the text embedding of the label
it was given. Points without a class (`NO_CLASS_ID`, or an id outside the vocabulary) and
non-finite features are left out; with no labeled point the score is NaN.
"""

from __future__ import annotations

import numpy as np
import torch


def tpss(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    text_embeddings: np.ndarray | torch.Tensor,
) -> float:
    """features [N, D] (points or voxels), labels [N] class ids, text_embeddings [K, D]."""
    f = torch.as_tensor(features).float()
    t = torch.as_tensor(text_embeddings).float().to(f.device)
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(f.device)
    if f.ndim != 2 or t.ndim != 2 or f.shape[1] != t.shape[1]:
        raise ValueError(
            f"need features [N, D] and text [K, D], got {tuple(f.shape)} and {tuple(t.shape)}"
        )
    if lab.shape != (f.shape[0],):
        raise ValueError(f"labels must be [{f.shape[0]}], got {tuple(lab.shape)}")
    keep = (lab >= 0) & (lab < t.shape[0]) & torch.isfinite(f).all(dim=1)
    if not bool(keep.any()):
        return float("nan")
    f = torch.nn.functional.normalize(f[keep], dim=1)
    t = torch.nn.functional.normalize(t, dim=1)
    cos = (f * t[lab[keep]]).sum(dim=1)
    return float(cos.double().mean())


def tpss_of_result(result: object, text_embeddings: torch.Tensor) -> float:
    """TPSS of a labeled frame from a segmenter result: OpenScene's per-pass normalised voxel
    features and point->voxel rows (no per-point copy), or per-point `features` otherwise."""
    labels = np.asarray(result.labels, dtype=np.int64)
    passes = getattr(result, "passes", None)
    text = torch.as_tensor(text_embeddings).float()
    if passes:
        k = text.shape[0]
        total = None
        for normed, rows in passes:
            ok = (rows >= 0) & (labels < k)
            t = torch.nn.functional.normalize(text.to(normed.device), dim=1)
            r = torch.from_numpy(rows[ok]).to(normed.device)
            lab = torch.from_numpy(labels[ok]).to(normed.device)
            cos = (normed.float()[r] * t[lab]).sum(dim=1)
            total = cos if total is None else total + cos
        if total is None or total.numel() == 0:
            return float("nan")
        return float((total / len(passes)).double().mean())
    features = getattr(result, "features", None)
    if features is None:
        raise ValueError("the result carries no features (segment with return_features=True)")
    return tpss(features, labels, text)
