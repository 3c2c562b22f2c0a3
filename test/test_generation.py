"""Prototype image generation with a tiny real diffusers pipeline (no hub): seeds, batching,
planning, cache keys, and the `from_pretrained` path through a saved local folder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lidar_ovseg_ros.prototypes.generation import (
    GenerationConfig,
    GenerationConfigError,
    ImageRequest,
    TextToImageGenerator,
    image_seed,
    pipeline_digest,
    plan_images,
)
from lidar_ovseg_ros.prototypes.tiny_models import (
    build_tiny_clip_tokenizer,
    build_tiny_text_to_image_pipeline,
)
from lidar_ovseg_ros.vocabulary import Vocabulary

SIDE = 32  # 16x16 latents: a UNet step costs milliseconds


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_text_to_image_pipeline(seed=0)


@pytest.fixture(scope="module")
def config():
    return GenerationConfig(
        model_id="tiny", images_per_class=3, height=SIDE, width=SIDE, batch_size=3, device="cpu"
    )


def _vocab() -> Vocabulary:
    return Vocabulary.from_dict(
        {
            "classes": [
                {"name": "car", "prompts": ["a car", "a sedan"]},
                {"name": "traffic_cone", "prompts": ["an orange traffic cone"]},
            ]
        }
    )


def _arrays(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_same_seed_same_images_and_different_seeds_differ(pipe, config):
    gen = TextToImageGenerator.from_pipeline(pipe, config)
    reqs = plan_images(_vocab().classes[0], config)
    first, again = _arrays(gen.generate(reqs)), _arrays(gen.generate(reqs))
    assert first.shape == (3, SIDE, SIDE, 3)
    np.testing.assert_array_equal(first, again)
    # A separately built pipeline from the same seed generates the very same images.
    twin = TextToImageGenerator.from_pipeline(build_tiny_text_to_image_pipeline(seed=0), config)
    np.testing.assert_array_equal(_arrays(twin.generate(reqs)), first)
    assert twin.model_key == gen.model_key
    # Another base seed gives other images for the same prompts; images within a class differ.
    other = plan_images(_vocab().classes[0], replace(config, seed=1))
    assert [r.seed for r in other] != [r.seed for r in reqs]
    assert np.abs(_arrays(gen.generate(other)) - first).max() > 10
    assert np.abs(first[0] - first[2]).max() > 10  # same prompt, image index 0 vs 1
    assert first.std() > 1.0  # not a blank image


def test_batch_equals_one_by_one(pipe, config):
    gen = TextToImageGenerator.from_pipeline(pipe, config)
    reqs = plan_images(_vocab().classes[0], config) + plan_images(_vocab().classes[1], config)
    calls = gen.calls
    batched = _arrays(gen.generate(reqs))  # batches of 3, 3
    assert gen.calls == calls + 2
    single = _arrays(gen.generate(reqs, replace(config, batch_size=1)))
    assert gen.calls == calls + 2 + len(reqs)
    # Each image has its own generator: batching changes at most float rounding (1/255).
    assert np.abs(batched - single).max() <= 1
    assert np.mean(batched != single) < 0.01
    # Reversing the order of the requests does not change any image either.
    reversed_ = _arrays(gen.generate(reqs[::-1]))[::-1]
    assert np.abs(reversed_ - batched).max() <= 1


def test_tiny_pipeline_weights_follow_the_seed(pipe):
    assert pipeline_digest(build_tiny_text_to_image_pipeline(seed=0)) == pipeline_digest(pipe)
    assert pipeline_digest(build_tiny_text_to_image_pipeline(seed=1)) != pipeline_digest(pipe)


def test_plan_round_robin_and_stable_seeds(config):
    car, cone = _vocab().classes
    reqs = plan_images(car, config)
    assert [(r.prompt, r.index) for r in reqs] == [("a car", 0), ("a sedan", 0), ("a car", 1)]
    assert reqs[0].text == "a photo of a car, isolated object on a white background"
    assert reqs[0].seed == image_seed(config.seed, reqs[0].text, 0)
    assert len({r.seed for r in reqs}) == 3
    # More images per class appends images; the first ones keep their seeds (and cache keys).
    more = plan_images(car, replace(config, images_per_class=5))
    assert more[:3] == reqs
    # Every prompt x template gets at least one image, even above images_per_class.
    two_templates = replace(config, images_per_class=1, templates=("{prompt}", "a {prompt} toy"))
    texts = [r.text for r in plan_images(car, two_templates)]
    assert texts == ["a car", "a a car toy", "a sedan", "a a sedan toy"]
    # A seed depends on the text and index only, not on the class order in the vocabulary.
    alone = Vocabulary.from_dict(
        {"classes": [{"name": "x", "prompts": ["an orange traffic cone"]}]}
    )
    assert [r.seed for r in plan_images(alone.classes[0], config)] == [
        r.seed for r in plan_images(cone, config)
    ]


def test_image_keys_name_model_prompt_seed_and_resolution(pipe, config):
    gen = TextToImageGenerator.from_pipeline(pipe, config)
    req = plan_images(_vocab().classes[0], config)[0]
    key = gen.image_key(req)
    assert gen.image_key(req, replace(config, batch_size=1, images_per_class=9)) == key
    changed = [
        gen.image_key(req, replace(config, height=64)),
        gen.image_key(req, replace(config, width=64)),
        gen.image_key(req, replace(config, num_inference_steps=2)),
        gen.image_key(req, replace(config, guidance_scale=2.0)),
        gen.image_key(replace(req, seed=req.seed + 1)),
        gen.image_key(replace(req, prompt="a truck")),
        gen.image_key(replace(req, template="{prompt}")),
        gen.image_key(replace(req, index=5)),
        TextToImageGenerator.from_pipeline(pipe, config, key="other-model").image_key(req),
        TextToImageGenerator.from_pretrained(replace(config, model_id="m/x")).image_key(req),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_from_pretrained_local_folder_matches_in_memory(tmp_path, pipe, config):
    pipe.save_pretrained(tmp_path / "t2i")
    gen = TextToImageGenerator.from_pretrained(replace(config, model_id=str(tmp_path / "t2i")))
    assert gen._pipe is None  # lazy: nothing loaded until an image is needed
    reqs = plan_images(_vocab().classes[1], config)
    loaded = _arrays(gen.generate(reqs))
    assert type(gen.pipe).__name__ == "StableDiffusionPipeline"
    in_memory = _arrays(TextToImageGenerator.from_pipeline(pipe, config).generate(reqs))
    np.testing.assert_array_equal(loaded, in_memory)


def test_tiny_tokenizer_distinguishes_prompts():
    tok = build_tiny_clip_tokenizer()
    a = tok("a photo of a bicycle")["input_ids"]
    b = tok("a photo of a bicyclist")["input_ids"]
    assert a != b and a[0] == tok.bos_token_id and a[-1] == tok.eos_token_id
    assert tok.unk_token_id not in tok("Ünïcode, 123 & symbols!")["input_ids"][1:-1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"templates": ("a photo of a car",)}, r"templates\[0\]"),
        ({"templates": ("{prompt} {other}",)}, r"templates\[0\]"),
        ({"templates": ()}, "templates"),
        ({"height": 100}, "height"),
        ({"images_per_class": 0}, "images_per_class"),
        ({"seed": -1}, "seed"),
        ({"dtype": "int8"}, "dtype"),
        ({"device": "cuda:x"}, "device"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(GenerationConfigError, match=field):
        GenerationConfig(**kwargs)


def test_request_text_is_the_filled_template():
    r = ImageRequest("car", "a car", "{prompt} on white", 0, 1)
    assert r.text == "a car on white"
