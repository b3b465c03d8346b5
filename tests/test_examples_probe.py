"""The RetinaNet detection probe of the examples (examples/detection_probe.py): its ridge
regression against exact linear data, its mAP on the built-in set from pycocotools run here on
the same detections, and when the RetinaNet case uses it."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import common, detection_probe, retinanet_training
from examples.data import CocoDetection, coco_split, make_detection_dataset
from tests.test_metrics_coco import reference_cocoeval


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), features=st.integers(1, 6), outputs=st.integers(1, 4))
def test_ridge_recovers_an_exact_linear_map(seed, features, outputs):
    """y = x W^T + b exactly, added in two chunks: a near-zero ridge gives back W and b."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(outputs, features, generator=generator, dtype=torch.float64)
    bias = torch.randn(outputs, generator=generator, dtype=torch.float64)
    x = torch.randn(50, features, generator=generator, dtype=torch.float64) * 5 + 3
    fit = detection_probe.Ridge()
    for chunk in (x[:20], x[20:]):
        fit.add(chunk, chunk @ weight.T + bias)
    got_weight, got_bias = fit.solve(1e-12)
    assert fit.count == 50
    torch.testing.assert_close(got_weight, weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_bias, bias, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_the_probe_detects_the_built_in_objects(tmp_path):
    """The fitted head's detections on the 16 built-in validation images score an AP above 0
    by pycocotools' own COCOeval; the model's own head is left untouched."""
    root = make_detection_dataset(tmp_path)
    args = retinanet_training.build_parser().parse_args(["--out-dir", str(tmp_path)])
    common.detection_defaults(args, epochs=1)
    torch.manual_seed(0)
    model = retinanet_training.build_model(args)
    own = {name: value.clone() for name, value in model.head.state_dict().items()}
    head = detection_probe.fit_retinanet_head(
        model, CocoDetection(*coco_split(root, "train"), train=True)
    )
    images, annotations = coco_split(root, "val")
    results = []
    with detection_probe.head_swapped(model, head), torch.inference_mode():
        assert model.head is head
        for image, target in CocoDetection(images, annotations):
            (output,) = model([image])
            for (x1, y1, x2, y2), label, score in zip(
                output["boxes"].tolist(),
                output["labels"].tolist(),
                output["scores"].tolist(),
                strict=True,
            ):
                results.append({"image_id": target["image_id"], "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})  # fmt: skip
    assert model.head is not head
    for name, value in model.head.state_dict().items():
        assert torch.equal(value, own[name]), name
    gt = json.loads(annotations.read_text())
    reference = reference_cocoeval(gt, results, [image["id"] for image in gt["images"]])
    with contextlib.redirect_stdout(io.StringIO()):
        reference.summarize()
    assert {r["category_id"] for r in results} <= {1, 3, 18}  # only the built-in categories
    assert reference.stats[0] > 0.01  # AP@[.5:.95]; 0.0556 when written


@pytest.mark.parametrize("given", ["--data", "--weights", "--backbone-weights"])
def test_the_case_fits_no_probe_on_real_data_or_weights(tmp_path, given):
    args = argparse.Namespace(data=None, weights=None, backbone_weights=None)
    setattr(args, given.lstrip("-").replace("-", "_"), tmp_path / "given")
    # returns before it touches the set-up, the model or the run
    assert retinanet_training.fit_probe(args, None, None, None) is None  # type: ignore[arg-type]
