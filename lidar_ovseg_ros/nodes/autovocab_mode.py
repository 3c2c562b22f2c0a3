"""`vocabulary_mode: auto` of `lidar_ovseg_node` (3D-AVS): the node names the scene itself.

Thin ROS side of `lidar_ovseg_ros.autovocab`: the worker hands each labeled scan over
(`on_frame`, a reference, nothing computed), image callbacks (`auto_image_topics`, optional)
store the newest message of each camera undecoded, a background `AutoVocabRunner` captions the
newest scan (and decodes and captions the newest images) every `auto_period` seconds, and each
round publishes `~/output/captions` (JSON: per source
and sector its caption, the tags) and `~/output/vocabulary_proposal` (JSON: the proposed classes
with provenance: captions, sources, rounds seen); a changed proposal is requested through the
node's `VocabularySwitcher`, so it is swapped in atomically (no frame mixes vocabularies).
TPSS of every labeled frame goes to /diagnostics.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from rclpy.node import Node
from std_msgs.msg import String

from lidar_ovseg_ros.autovocab.pipeline import (
    AutoVocabConfig,
    AutoVocabRound,
    AutoVocabulary,
    clip_embedder,
)
from lidar_ovseg_ros.autovocab.runner import AutoVocabRunner
from lidar_ovseg_ros.autovocab.tpss import tpss_of_result
from lidar_ovseg_ros.nodes.common import RollingStats, latched_qos
from lidar_ovseg_ros.vocabulary import Vocabulary
from lidar_ovseg_ros.vocabulary_switch import VocabularySwitcher

MODES = ("manual", "auto")


class AutoVocabMode:
    """Owns the auto-vocabulary models, the background runner and its two topics."""

    def __init__(
        self,
        node: Node,
        params: Any,
        segmenter: Any,
        switcher: VocabularySwitcher,
        base: Vocabulary | None,
    ) -> None:
        if params.method != "openscene":
            raise ValueError(
                "vocabulary_mode 'auto' needs method 'openscene' (CLIP-text classes: a proposed "
                f"vocabulary costs a text pass, not image generation); method is {params.method!r}"
            )
        self._node = node
        self._switcher = switcher
        config = AutoVocabConfig(
            profile=params.profile,
            smap_checkpoint=params.smap_checkpoint,
            clipcap_weights=params.clipcap_weights,
            gpt2_tokenizer=params.gpt2_tokenizer,
            image_captioner=params.image_captioner if self._topics(params) else "",
            merge_threshold=params.auto_merge_threshold,
            tagger=params.auto_tagger,
            tagger_model=params.auto_tagger_model,
            window=params.auto_window,
            max_auto_classes=params.auto_max_classes,
            device=str(segmenter.device),
        )
        self.auto = AutoVocabulary.from_config(
            config,
            base=base,
            embedder=clip_embedder(segmenter.text_encoder),
            shared_trunk=segmenter.model if params.profile == "full" else None,
        )
        self._captions_pub = node.create_publisher(String, "~/output/captions", latched_qos())
        self._proposal_pub = node.create_publisher(
            String, "~/output/vocabulary_proposal", latched_qos()
        )
        self._pubs = [self._captions_pub, self._proposal_pub]
        self.tpss = RollingStats()
        self.last_tpss = float("nan")
        self.proposals_requested = 0
        self.runner = AutoVocabRunner(
            self.auto, float(params.auto_period), self._on_round, self._on_error
        )
        self.runner.start()
        self._image_subs = [self._subscribe(name, topic) for name, topic in self._topics(params)]
        node.get_logger().info(
            f"vocabulary_mode auto: captioning the newest scan every {params.auto_period} s "
            f"(base classes: {base.names if base else 'none'})"
        )

    @staticmethod
    def _topics(params: Any) -> list[tuple[str, str]]:
        """(camera name, topic) of `auto_image_topics`: the name is the topic's camera segment
        (`/cameras/CAM_FRONT/image_raw/compressed` -> CAM_FRONT)."""
        out = []
        for topic in (t.strip() for t in str(params.auto_image_topics).split(",")):
            if not topic:
                continue
            parts = [p for p in topic.split("/") if p and p not in ("compressed", "image_raw")]
            out.append((parts[-1] if parts else topic, topic))
        return out

    def _subscribe(self, name: str, topic: str) -> Any:
        """The newest image of a camera is stored undecoded; the round decodes it."""
        from sensor_msgs.msg import CompressedImage, Image

        from lidar_ovseg_ros.nodes.camera_occupancy_node import decode_image

        msg_type = CompressedImage if topic.rstrip("/").endswith("compressed") else Image

        def on_image(msg: Any) -> None:
            self.runner.submit_image(name, lambda m=msg: decode_image(m))

        return self._node.create_subscription(msg_type, topic, on_image, 2)

    def on_frame(self, points: np.ndarray, result: Any) -> None:
        """Called by the worker after a frame is labeled: hand the scan over, record TPSS."""
        self.runner.submit_scan(points)
        text = getattr(result.vocabulary, "text_embeddings", None)
        if text is None or len(result.labels) == 0:
            return
        value = tpss_of_result(result, text)
        if np.isfinite(value):
            self.last_tpss = value
            self.tpss.add(value)

    def _on_round(self, r: AutoVocabRound) -> None:
        self._captions_pub.publish(String(data=json.dumps(r.captions_dict())))
        self._proposal_pub.publish(String(data=json.dumps(r.proposal.to_dict())))
        if r.proposal.changed and r.proposal.vocabulary is not None:
            self.proposals_requested += 1
            self._switcher.request(
                r.proposal.vocabulary, f"auto-vocabulary round {r.proposal.round}"
            )

    def _on_error(self, exc: Exception) -> None:
        self._node.get_logger().warning(
            f"auto-vocabulary round failed: {type(exc).__name__}: {exc}",
            throttle_duration_sec=10.0,
        )

    def diagnostics(self) -> dict[str, Any]:
        s = self.runner.stats
        values: dict[str, Any] = {
            "vocabulary_mode": "auto",
            "auto_rounds": s.rounds,
            "auto_errors": s.errors,
            "auto_scans_skipped": s.scans_skipped,
            "auto_images_received": s.images_received,
            "auto_image_errors": s.image_errors,
            "auto_last_round_s": round(s.last_round_seconds or 0.0, 3),
            "auto_last_error": s.last_error,
            "auto_proposals_requested": self.proposals_requested,
            "auto_classes": ", ".join(self.auto.proposer.active_tags),
            "tpss": round(self.last_tpss, 5) if np.isfinite(self.last_tpss) else "nan",
        }
        for k, v in self.tpss.summary().items():
            values[f"tpss_{k}"] = v
        return values

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the rounds and release the topics (a later configure makes a new one)."""
        self.runner.stop(timeout)
        for sub in self._image_subs:
            self._node.destroy_subscription(sub)
        self._image_subs = []
        for pub in self._pubs:
            self._node.destroy_publisher(pub)
        self._pubs = []
