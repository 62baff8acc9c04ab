"""Our ImageReward and HPS v2 loaders agree with the reference packages on the same random weights.

The reference scores were made once by tests/tools/fixtures/make_scoring_reference.py with
image-reward 1.5 and hpsv2 1.2.0 in a throwaway environment; here the same tiny weights are
regenerated from the seed and loaded through the project's own code.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from diffagent.tools.score_hps import HpsScorer
from diffagent.tools.score_imagereward import ImageRewardScorer
from diffagent.tools.testing.score_tiny import make_tiny_scorer_weights

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = 1e-4


def _reference_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_scoring_reference", FIXTURES / "make_scoring_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURES / "scoring_reference" / "reference_scores.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, reference: dict) -> dict[str, Path]:
    return make_tiny_scorer_weights(tmp_path_factory.mktemp("tiny-scorers"), seed=reference["seed"])


@pytest.fixture(scope="module")
def ref_module() -> ModuleType:
    return _reference_module()


def test_imagereward_matches_reference_package(tiny, reference, ref_module) -> None:
    scorer = ImageRewardScorer(tiny["imagereward"], tiny["imagereward_med_config"])
    images = ref_module.reference_images()
    assert reference["prompts"] == ref_module.PROMPTS
    for prompt in reference["prompts"]:
        expected = np.array(reference["imagereward"]["scores"][prompt])
        ours = np.array(scorer.score(prompt, images))
        # The check means something only if the images really score differently.
        assert np.ptp(expected) > 100 * TOLERANCE
        np.testing.assert_allclose(ours, expected, atol=TOLERANCE, rtol=0)


def test_imagereward_tokenizer_matches_reference(tiny, reference) -> None:
    scorer = ImageRewardScorer(tiny["imagereward"], tiny["imagereward_med_config"])
    scorer._load()
    for prompt, expected in reference["imagereward"]["input_ids"].items():
        ids = scorer._tokenizer(  # type: ignore[misc]
            prompt, padding="max_length", truncation=True, max_length=35
        )["input_ids"]
        assert ids == expected


def test_hps_matches_reference_package(tiny, reference, ref_module) -> None:
    scorer = HpsScorer(tiny["hps"], arch=str(tiny["hps_arch"]), version="v2.0")
    images = ref_module.reference_images()
    for prompt in reference["prompts"]:
        expected = np.array(reference["hps"]["scores"][prompt])
        assert np.ptp(expected) > 100 * TOLERANCE
        np.testing.assert_allclose(scorer.score(prompt, images), expected, atol=TOLERANCE, rtol=0)
